/*
 * enforce.c - the decisions the runtime asks for: may this container be
 * created with this OCI config, may this process be exec'd, may the host
 * read logs, send a signal, copy a file in, mount a volume, run this image.
 *
 * Every request comes from the untrusted host. The checks fail closed: a
 * member we do not understand is denied unless it is known to be harmless,
 * and the first failing check decides, naming the rule and the field.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "policy/pol_int.h"
#include "util/json.h"
#include "util/util.h"

void pol_decision_clear(pol_decision *d)
{
    free(d->rule);
    free(d->field);
    free(d->reason);
    *d = (pol_decision){0};
}

static int decide(pol_decision *d, bool allowed, const char *rule, const char *field,
                  const char *fmt, ...) CISTA_PRINTF(5, 6);

static int decide(pol_decision *d, bool allowed, const char *rule, const char *field,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    d->allowed = allowed;
    d->rule = xstrdup(rule);
    d->field = xstrdup(field ? field : "");
    d->reason = s;
    return allowed ? 0 : -EACCES;
}

#define DENY(d, rule, field, ...) decide(d, false, rule, field, __VA_ARGS__)

/* Find the container, or deny. */
static int find(const pol_container **out, pol_decision *d, const pol_policy *p, const char *name)
{
    if (!name) {
        if (p->containers_len == 1) {
            *out = &p->containers[0];
            return 0;
        }
        return DENY(d, "container", "",
                    "the policy has %zu containers and the request does not name one",
                    p->containers_len);
    }
    for (size_t i = 0; i < p->containers_len; i++) {
        if (strcmp(p->containers[i].name, name) == 0) {
            *out = &p->containers[i];
            return 0;
        }
    }
    return DENY(d, "container", "", "container \"%s\" is not in the policy", name);
}

static bool strv_has(const pol_strv *s, const char *v)
{
    for (size_t i = 0; i < s->len; i++)
        if (strcmp(s->v[i], v) == 0)
            return true;
    return false;
}

/* Get a string array member as borrowed strings; -1 when malformed. */
static int str_array(const json_t *a, size_t max)
{
    if (!json_is_array(a) || json_array_size(a) > max)
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return -1;
    }
    return 0;
}

static int check_args(pol_decision *d, const pol_container *c, const json_t *proc)
{
    json_t *args = json_object_get(proc, "args");
    if (!args)
        return DENY(d, "process.args", "process.args", "process.args is missing");
    if (str_array(args, 4096) < 0)
        return DENY(d, "process.args", "process.args", "process.args is not an array of strings");
    size_t n = json_array_size(args);
    for (size_t i = 0; i < n && i < c->args.len; i++) {
        const char *a = json_string_value(json_array_get(args, i));
        if (strcmp(a, c->args.v[i]) != 0) {
            char f[48];
            snprintf(f, sizeof(f), "process.args[%zu]", i);
            return DENY(d, "process.args", f,
                        "%s \"%s\" differs from \"%s\" in the policy of container \"%s\"", f, a,
                        c->args.v[i], c->name);
        }
    }
    if (n != c->args.len)
        return DENY(d, "process.args", "process.args",
                    "process.args has %zu arguments, the policy of container \"%s\" has %zu", n,
                    c->name, c->args.len);
    return 0;
}

/* Every variable must match a rule, and no name may appear twice: a later
 * duplicate would shadow the value the policy allowed. */
static int check_env(pol_decision *d, const pol_container *c, const json_t *proc)
{
    json_t *env = json_object_get(proc, "env");
    if (!env)
        return 0;
    if (str_array(env, 4096) < 0)
        return DENY(d, "process.env", "process.env", "process.env is not an array of strings");
    size_t n = json_array_size(env);
    for (size_t i = 0; i < n; i++) {
        const char *e = json_string_value(json_array_get(env, i));
        char f[48];
        snprintf(f, sizeof(f), "process.env[%zu]", i);
        const char *eq = strchr(e, '=');
        if (!eq || eq == e)
            return DENY(d, "process.env", f, "%s \"%s\" is not NAME=VALUE", f, e);
        size_t nl = (size_t)(eq - e);
        for (size_t j = 0; j < i; j++) {
            const char *o = json_string_value(json_array_get(env, j));
            if (strncmp(o, e, nl + 1) == 0)
                return DENY(d, "process.env", f,
                            "%s \"%s\" sets %.*s again (first at process.env[%zu]); duplicates "
                            "are denied because the later one shadows the earlier",
                            f, e, (int)nl, e, j);
        }
        bool ok = false;
        for (size_t r = 0; r < c->env_len && !ok; r++)
            ok = pol__match(&c->env[r], e);
        if (!ok)
            return DENY(d, "process.env", f, "%s \"%s\" matches no env rule of container \"%s\"", f,
                        e, c->name);
    }
    return 0;
}

static int check_caps(pol_decision *d, const pol_container *c, const json_t *proc)
{
    json_t *caps = json_object_get(proc, "capabilities");
    if (!caps || json_is_null(caps))
        return 0;
    if (!json_is_object(caps))
        return DENY(d, "capabilities", "process.capabilities",
                    "process.capabilities is not an object");
    const char *k;
    json_t *v;
    json_object_foreach(caps, k, v)
    {
        int set = -1;
        for (int i = 0; i < POL_CAP_SETS; i++)
            if (strcmp(k, pol__cap_set_names[i]) == 0)
                set = i;
        char f[64];
        snprintf(f, sizeof(f), "process.capabilities.%.20s", k);
        if (set < 0)
            return DENY(d, "capabilities", f, "unknown capability set \"%s\"", k);
        if (json_is_null(v))
            continue;
        if (str_array(v, 512) < 0)
            return DENY(d, "capabilities", f, "%s is not an array of strings", f);
        size_t i;
        json_t *cap;
        json_array_foreach(v, i, cap)
        {
            const char *s = json_string_value(cap);
            if (!strv_has(&c->caps[set], s))
                return DENY(d, "capabilities", f,
                            "%s[%zu] %s is not in the %s set allowed for container \"%s\"", f, i, s,
                            k, c->name);
        }
    }
    return 0;
}

static int get_id(uint32_t *out, const json_t *user, const char *key)
{
    json_t *v = json_object_get(user, key);
    if (!v)
        return 1; /* missing: OCI default 0 */
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        return -1;
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static int check_user(pol_decision *d, const pol_container *c, const json_t *proc)
{
    json_t *user = json_object_get(proc, "user");
    if (!json_is_object(user))
        return DENY(d, "process.user", "process.user", "process.user is missing or malformed");
    uint32_t uid = 0, gid = 0;
    if (get_id(&uid, user, "uid") < 0 || get_id(&gid, user, "gid") < 0)
        return DENY(d, "process.user", "process.user", "process.user uid/gid malformed");
    if (uid != c->uid)
        return DENY(d, "process.user", "process.user.uid",
                    "process.user.uid %" PRIu32 " differs from %" PRIu32
                    " in the policy of container \"%s\"",
                    uid, c->uid, c->name);
    if (gid != c->gid)
        return DENY(d, "process.user", "process.user.gid",
                    "process.user.gid %" PRIu32 " differs from %" PRIu32
                    " in the policy of container \"%s\"",
                    gid, c->gid, c->name);
    if (json_object_get(user, "username"))
        return DENY(d, "process.user", "process.user.username",
                    "process.user.username is not allowed (Windows only)");
    json_t *add = json_object_get(user, "additionalGids");
    if (add && !json_is_null(add)) {
        if (!json_is_array(add) || json_array_size(add) > 4096)
            return DENY(d, "process.user", "process.user.additionalGids",
                        "process.user.additionalGids is not an array");
        size_t i;
        json_t *g;
        json_array_foreach(add, i, g)
        {
            char f[64];
            snprintf(f, sizeof(f), "process.user.additionalGids[%zu]", i);
            if (!json_is_integer(g))
                return DENY(d, "process.user", f, "%s is not an integer", f);
            bool ok = json_integer_value(g) == (json_int_t)c->gid;
            for (size_t j = 0; j < c->gids_len && !ok; j++)
                ok = json_integer_value(g) == (json_int_t)c->gids[j];
            if (!ok)
                return DENY(d, "process.user", f,
                            "%s %" JSON_INTEGER_FORMAT
                            " is not an additional gid allowed for container \"%s\"",
                            f, json_integer_value(g), c->name);
        }
    }
    return 0;
}

static int check_cwd(pol_decision *d, const pol_container *c, const json_t *proc, bool exec)
{
    json_t *cwd = json_object_get(proc, "cwd");
    if (!cwd && exec)
        return 0; /* exec inherits the container's cwd */
    if (!json_is_string(cwd))
        return DENY(d, "process.cwd", "process.cwd", "process.cwd is missing or not a string");
    _cleanup_free_ char *n = pol_path_normalize(json_string_value(cwd));
    if (!n || strcmp(n, c->cwd) != 0)
        return DENY(d, "process.cwd", "process.cwd",
                    "process.cwd \"%s\" differs from \"%s\" in the policy of container \"%s\"",
                    json_string_value(cwd), c->cwd, c->name);
    return 0;
}

static int check_nnp(pol_decision *d, const pol_container *c, const json_t *proc)
{
    json_t *v = json_object_get(proc, "noNewPrivileges");
    if (v && !json_is_boolean(v))
        return DENY(d, "process.no_new_privileges", "process.noNewPrivileges",
                    "process.noNewPrivileges is not a boolean");
    if (c->no_new_privileges && !json_is_true(v))
        return DENY(d, "process.no_new_privileges", "process.noNewPrivileges",
                    "process.noNewPrivileges must be true for container \"%s\"", c->name);
    return 0;
}

/* Options that only take power away are accepted on any mount. */
static bool restrictive_option(const char *o)
{
    static const char *const safe[] = {"ro",       "nosuid",   "nodev",      "noexec",
                                       "private",  "rprivate", "slave",      "rslave",
                                       "relatime", "noatime",  "nodiratime", "strictatime"};
    for (size_t i = 0; i < ARRAY_LEN(safe); i++)
        if (strcmp(o, safe[i]) == 0)
            return true;
    return false;
}

/* Why @m does not fit @rule, or NULL when it does. @dest is normalised. */
static const char *mount_mismatch(const pol_mount *rule, const char *dest, const char *type,
                                  const char *source, const json_t *opts)
{
    if (strcmp(rule->destination, dest) != 0)
        return "destination";
    if (strcmp(rule->type, type) != 0)
        return "type";
    /* An absolute source is normalised too, so "//" or "/./" cannot dodge an exact rule. */
    _cleanup_free_ char *nsrc = source[0] == '/' ? pol_path_normalize(source) : xstrdup(source);
    if (!nsrc || !pol__match(&rule->source, nsrc))
        return "source";
    bool has_ro = false;
    size_t i;
    json_t *o;
    json_array_foreach(opts, i, o)
    {
        const char *s = json_string_value(o);
        has_ro |= strcmp(s, "ro") == 0;
        if (!restrictive_option(s) && !strv_has(&rule->options, s))
            return "options";
    }
    if (rule->read_only && !has_ro)
        return "read-only";
    return NULL;
}

/* A bind mount: type "bind", or no type/"none" with a bind option (as runc reads it). */
static bool is_bind(const char *type, const json_t *opts)
{
    if (strcmp(type, "bind") == 0)
        return true;
    if (*type && strcmp(type, "none") != 0)
        return false;
    size_t i;
    json_t *o;
    json_array_foreach(opts, i, o)
    {
        const char *s = json_string_value(o);
        if (s && (strcmp(s, "bind") == 0 || strcmp(s, "rbind") == 0))
            return true;
    }
    return false;
}

/*
 * A mount at a volume's mount point is that volume: the runtime puts the decrypted volume
 * there, whatever the host's source was (it names where the ciphertext lives). So it is
 * checked by the volumes rule: a bind, once, with options that only bind or take power away.
 */
static int check_volume_mount(pol_decision *d, const pol_container *c, const pol_volume *vol,
                              const json_t *mounts, size_t index, const char *type,
                              const json_t *opts, const char *f)
{
    if (!is_bind(type, opts))
        return DENY(d, "volumes", f,
                    "%s (type \"%s\") is at \"%s\", the mount point of volume \"%s\" of "
                    "container \"%s\": only the volume (a bind mount) may be mounted there",
                    f, type, vol->mount_point, vol->name, c->name);
    for (size_t j = 0; j < index; j++) {
        const char *od =
            json_string_value(json_object_get(json_array_get(mounts, j), "destination"));
        _cleanup_free_ char *on = od ? pol_path_normalize(od) : NULL;
        if (on && strcmp(on, vol->mount_point) == 0)
            return DENY(d, "volumes", f, "%s mounts volume \"%s\" at \"%s\" a second time", f,
                        vol->name, vol->mount_point);
    }
    size_t i;
    json_t *o;
    json_array_foreach(opts, i, o)
    {
        const char *s = json_string_value(o);
        if (strcmp(s, "bind") && strcmp(s, "rbind") && strcmp(s, "rw") && !restrictive_option(s))
            return DENY(d, "volumes", f, "%s of volume \"%s\": option \"%s\" is not allowed", f,
                        vol->name, s);
    }
    return 0;
}

static int check_mounts(pol_decision *d, const pol_container *c, const json_t *cfg)
{
    json_t *mounts = json_object_get(cfg, "mounts");
    if (!mounts || json_is_null(mounts))
        return 0;
    if (!json_is_array(mounts) || json_array_size(mounts) > 4096)
        return DENY(d, "mounts", "mounts", "mounts is not an array");
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m)
    {
        char f[48];
        snprintf(f, sizeof(f), "mounts[%zu]", i);
        json_t *jd = json_object_get(m, "destination");
        json_t *jt = json_object_get(m, "type");
        json_t *js = json_object_get(m, "source");
        json_t *jo = json_object_get(m, "options");
        if (!json_is_string(jd))
            return DENY(d, "mounts", f, "%s has no destination", f);
        const char *dest = json_string_value(jd);
        /* OCI: type and source may be omitted for bind mounts; treat as "". */
        if ((jt && !json_is_string(jt)) || (js && !json_is_string(js)) ||
            (jo && !json_is_null(jo) && str_array(jo, 256) < 0))
            return DENY(d, "mounts", f, "%s is malformed", f);
        const char *type = jt ? json_string_value(jt) : "";
        const char *src = js ? json_string_value(js) : "";
        if (strlen(dest) != json_string_length(jd) ||
            (jt && strlen(type) != json_string_length(jt)) ||
            (js && strlen(src) != json_string_length(js)))
            return DENY(d, "mounts", f, "%s contains a NUL character", f);
        _cleanup_free_ char *nd = pol_path_normalize(dest);
        if (!nd)
            return DENY(d, "mounts", f,
                        "%s destination \"%s\" is not an absolute path without \"..\"", f, dest);
        const pol_volume *vol = NULL;
        for (size_t k = 0; k < c->volumes_len && !vol; k++)
            if (strcmp(c->volumes[k].mount_point, nd) == 0)
                vol = &c->volumes[k];
        if (vol) {
            int vr = check_volume_mount(d, c, vol, mounts, i, type, jo, f);
            if (vr < 0)
                return vr;
            continue;
        }
        json_t *empty = json_array();
        const char *why = "destination";
        for (size_t r = 0; r < c->mounts_len && why; r++) {
            const char *w = mount_mismatch(&c->mounts[r], nd, type, src, jo ? jo : empty);
            /* Report the most specific mismatch seen for this destination. */
            if (!w || strcmp(why, "destination") == 0)
                why = w;
        }
        json_decref(empty);
        if (why) {
            if (strcmp(why, "destination") == 0)
                return DENY(d, "mounts", f,
                            "%s destination \"%s\" is not allowed for container \"%s\"", f, dest,
                            c->name);
            return DENY(d, "mounts", f,
                        "%s to \"%s\" (type \"%s\", source \"%s\"): its %s matches no mount rule "
                        "of container \"%s\"",
                        f, dest, type, src, why, c->name);
        }
    }
    return 0;
}

static int check_sysctls(pol_decision *d, const pol_container *c, const json_t *cfg)
{
    json_t *linux_ = json_object_get(cfg, "linux");
    json_t *sys = json_is_object(linux_) ? json_object_get(linux_, "sysctl") : NULL;
    if (!sys || json_is_null(sys))
        return 0;
    if (!json_is_object(sys))
        return DENY(d, "sysctls", "linux.sysctl", "linux.sysctl is not an object");
    const char *k;
    json_t *v;
    json_object_foreach(sys, k, v)
    {
        char f[160];
        snprintf(f, sizeof(f), "linux.sysctl.%.128s", k);
        size_t j;
        for (j = 0; j < c->sysctl_keys.len; j++)
            if (strcmp(c->sysctl_keys.v[j], k) == 0)
                break;
        if (j == c->sysctl_keys.len)
            return DENY(d, "sysctls", f, "sysctl %s is not allowed for container \"%s\"", k,
                        c->name);
        if (!json_is_string(v) || strcmp(json_string_value(v), c->sysctl_values.v[j]) != 0)
            return DENY(d, "sysctls", f, "sysctl %s must be \"%s\" for container \"%s\"", k,
                        c->sysctl_values.v[j], c->name);
    }
    return 0;
}

static int check_root(pol_decision *d, const pol_container *c, const json_t *cfg)
{
    json_t *root = json_object_get(cfg, "root");
    if (!json_is_object(root))
        return DENY(d, "read_only_rootfs", "root", "root is missing");
    json_t *ro = json_object_get(root, "readonly");
    if (ro && !json_is_boolean(ro))
        return DENY(d, "read_only_rootfs", "root.readonly", "root.readonly is not a boolean");
    if (c->read_only_rootfs && !json_is_true(ro))
        return DENY(d, "read_only_rootfs", "root.readonly",
                    "root.readonly must be true for container \"%s\"", c->name);
    return 0;
}

static int parse_req(json_t **out, pol_decision *d, const char *data, size_t size, const char *what)
{
    cista_error *err = NULL;
    if (!data)
        return DENY(d, what, "", "%s is missing", what);
    int r = js_parse_object(out, data, size, POL_MAX_CONFIG, what, &err);
    if (r < 0) {
        r = DENY(d, what, "", "%s", err->msg);
        err_free(err);
    }
    return r;
}

int pol_allow_create(pol_decision *out, const pol_policy *p, const char *container,
                     const char *config, size_t config_size)
{
    *out = (pol_decision){0};
    _cleanup_json_ json_t *cfg = NULL;
    int r = parse_req(&cfg, out, config, config_size, "config");
    if (r < 0)
        return r;
    if (!container) {
        json_t *ann = json_object_get(cfg, "annotations");
        json_t *n =
            json_is_object(ann) ? json_object_get(ann, "io.kubernetes.cri.container-name") : NULL;
        if (json_is_string(n))
            container = json_string_value(n);
    }
    const pol_container *c = NULL;
    if ((r = find(&c, out, p, container)) < 0)
        return r;
    json_t *proc = json_object_get(cfg, "process");
    if (!json_is_object(proc))
        return DENY(out, "process", "process", "process is missing");
    if ((r = check_args(out, c, proc)) < 0 || (r = check_env(out, c, proc)) < 0 ||
        (r = check_cwd(out, c, proc, false)) < 0 || (r = check_user(out, c, proc)) < 0 ||
        (r = check_nnp(out, c, proc)) < 0 || (r = check_caps(out, c, proc)) < 0 ||
        (r = check_root(out, c, cfg)) < 0 || (r = check_mounts(out, c, cfg)) < 0 ||
        (r = check_sysctls(out, c, cfg)) < 0)
        return r;
    return decide(out, true, "create", "", "container \"%s\" matches its policy", c->name);
}

int pol_allow_exec(pol_decision *out, const pol_policy *p, const char *container,
                   const char *process, size_t process_size)
{
    *out = (pol_decision){0};
    _cleanup_json_ json_t *proc = NULL;
    int r = parse_req(&proc, out, process, process_size, "process");
    if (r < 0)
        return r;
    const pol_container *c = NULL;
    if ((r = find(&c, out, p, container)) < 0)
        return r;
    json_t *args = json_object_get(proc, "args");
    if (!args || str_array(args, 4096) < 0 || json_array_size(args) == 0)
        return DENY(out, "exec", "args", "args is missing or not an array of strings");
    if (c->exec_len == 0)
        return DENY(out, "exec", "args", "exec is not allowed in container \"%s\"", c->name);
    bool ok = false;
    for (size_t i = 0; i < c->exec_len && !ok; i++) {
        const pol_strv *cmd = &c->exec[i];
        ok = cmd->len == json_array_size(args);
        for (size_t j = 0; ok && j < cmd->len; j++)
            ok = strcmp(cmd->v[j], json_string_value(json_array_get(args, j))) == 0;
    }
    if (!ok) {
        _cleanup_free_ char *shown = js_dump_compact(args);
        return DENY(out, "exec", "args",
                    "args %s is not a command allowed for exec in container \"%s\"", shown,
                    c->name);
    }
    if ((r = check_env(out, c, proc)) < 0 || (r = check_cwd(out, c, proc, true)) < 0 ||
        (r = check_caps(out, c, proc)) < 0 || (r = check_nnp(out, c, proc)) < 0)
        return r;
    if (json_object_get(proc, "user") && (r = check_user(out, c, proc)) < 0)
        return r;
    return decide(out, true, "exec", "", "exec in container \"%s\" is allowed", c->name);
}

int pol_allow_logs(pol_decision *out, const pol_policy *p, const char *container)
{
    *out = (pol_decision){0};
    const pol_container *c = NULL;
    int r = find(&c, out, p, container);
    if (r < 0)
        return r;
    if (!c->logs)
        return DENY(out, "logs", "", "reading logs of container \"%s\" is not allowed", c->name);
    return decide(out, true, "logs", "", "reading logs of container \"%s\" is allowed", c->name);
}

int pol_allow_signal(pol_decision *out, const pol_policy *p, const char *container, int sig)
{
    *out = (pol_decision){0};
    const pol_container *c = NULL;
    int r = find(&c, out, p, container);
    if (r < 0)
        return r;
    for (size_t i = 0; i < c->signals_len; i++)
        if (c->signals[i] == sig)
            return decide(out, true, "signals", "", "signal %d to container \"%s\" is allowed", sig,
                          c->name);
    return DENY(out, "signals", "signal", "signal %d to container \"%s\" is not allowed", sig,
                c->name);
}

int pol_allow_copy(pol_decision *out, const pol_policy *p, const char *container, const char *path)
{
    *out = (pol_decision){0};
    const pol_container *c = NULL;
    int r = find(&c, out, p, container);
    if (r < 0)
        return r;
    _cleanup_free_ char *n = pol_path_normalize(path);
    if (!n)
        return DENY(out, "copy", "path", "path \"%s\" is not an absolute path without \"..\"",
                    path ? path : "(null)");
    size_t nl = strlen(n);
    for (size_t i = 0; i < c->copy.len; i++) {
        const char *a = c->copy.v[i];
        size_t al = strlen(a);
        bool dir = al > 1 && a[al - 1] == '/';
        if ((!dir && strcmp(a, n) == 0) || (dir && nl > al - 1 && strncmp(a, n, al) == 0))
            return decide(out, true, "copy", "", "copy to \"%s\" is allowed by copy[%zu]", n, i);
    }
    return DENY(out, "copy", "path", "copy into container \"%s\" at \"%s\" is not allowed", c->name,
                path);
}

int pol_allow_volume_mount(pol_decision *out, const pol_policy *p, const char *container,
                           const char *name, const char *dest)
{
    *out = (pol_decision){0};
    const pol_container *c = NULL;
    int r = find(&c, out, p, container);
    if (r < 0)
        return r;
    _cleanup_free_ char *n = pol_path_normalize(dest);
    if (!name || !n)
        return DENY(out, "volumes", "mount_point",
                    "volume name missing or mount point not an absolute path without \"..\"");
    for (size_t i = 0; i < c->volumes_len; i++) {
        if (strcmp(c->volumes[i].name, name) != 0)
            continue;
        if (strcmp(c->volumes[i].mount_point, n) == 0)
            return decide(out, true, "volumes", "", "volume \"%s\" at \"%s\" is allowed", name, n);
        return DENY(out, "volumes", "mount_point",
                    "volume \"%s\" of container \"%s\" is mounted at \"%s\" by its policy, "
                    "not at \"%s\"",
                    name, c->name, c->volumes[i].mount_point, dest);
    }
    return DENY(out, "volumes", "name",
                "volume \"%s\" (at \"%s\") is not declared by the policy of container \"%s\"", name,
                dest, c->name);
}

int pol_allow_image(pol_decision *out, const pol_policy *p, const char *container,
                    const char *manifest_digest, const char *const *diff_ids, size_t count)
{
    *out = (pol_decision){0};
    const pol_container *c = NULL;
    int r = find(&c, out, p, container);
    if (r < 0)
        return r;
    if (!c->has_image)
        return DENY(out, "image", "", "container \"%s\" has no image rule", c->name);
    if (!manifest_digest || strcmp(manifest_digest, c->manifest_digest) != 0)
        return DENY(out, "image", "manifest_digest",
                    "manifest digest %s differs from %s in the policy of container \"%s\"",
                    manifest_digest ? manifest_digest : "(none)", c->manifest_digest, c->name);
    if (count != c->layers.len)
        return DENY(out, "image", "layers", "image has %zu layers, the policy has %zu", count,
                    c->layers.len);
    for (size_t i = 0; i < count; i++) {
        if (!diff_ids[i] || strcmp(diff_ids[i], c->layers.v[i]) != 0) {
            char f[48];
            snprintf(f, sizeof(f), "layers[%zu]", i);
            return DENY(out, "image", f, "layer %zu diff_id %s differs from %s in the policy", i,
                        diff_ids[i] ? diff_ids[i] : "(none)", c->layers.v[i]);
        }
    }
    return decide(out, true, "image", "", "image of container \"%s\" matches", c->name);
}
