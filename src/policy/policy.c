/*
 * policy.c - parsing and validating the policy JSON, its canonical form and
 * its hash encodings.
 *
 * Validation is strict because a policy that means something else than its
 * author thinks is a hole: unknown members are refused (a typo such as
 * "capabilites" must not silently drop a rule), every regex is compiled
 * here, and container names are unique.
 */
#include "policy/policy.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "policy/pol_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

const char *const pol__cap_set_names[POL_CAP_SETS] = {"bounding", "effective", "inheritable",
                                                      "permitted", "ambient"};

/* Generous, but a policy listing more than this is not hand-checkable anyway. */
#define MAX_LIST 4096
#define MAX_CONTAINERS 256

/*
 * Whether the groups of an ERE close where they open: "a)|(.*" would turn ^(%s)$ into
 * ^(a)|(.*)$, which matches anything. Escaped characters and bracket expressions are skipped.
 */
static bool groups_balanced(const char *p)
{
    int depth = 0;
    for (; *p; p++) {
        if (*p == '\\') {
            if (!*++p)
                return false;
        } else if (*p == '[') {
            p++;
            if (*p == '^')
                p++;
            if (*p == ']')
                p++;
            while (*p && *p != ']') {
                if (p[0] == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
                    char close = p[1];
                    p += 2;
                    while (*p && !(p[0] == close && p[1] == ']'))
                        p++;
                    if (!*p)
                        return false;
                    p++;
                }
                p++;
            }
            if (!*p)
                return false;
        } else if (*p == '(') {
            depth++;
        } else if (*p == ')' && --depth < 0) {
            return false;
        }
    }
    return depth == 0;
}

int pol__regex_compile(regex_t *re, const char *pattern, const char *what, cista_error **err)
{
    /*
     * Anchor here rather than trusting the author: an unanchored rule
     * "FOO=bar" would also match "XFOO=barx". The group keeps alternations
     * inside the anchors ("a|b" becomes ^(a|b)$, not ^a|b$), if the pattern's own groups are
     * balanced.
     */
    if (!groups_balanced(pattern))
        return err_set(err, -EINVAL,
                       "%s: regex \"%s\": unbalanced parentheses (they could escape the "
                       "anchoring)",
                       what, pattern);
    _cleanup_free_ char *anchored = xasprintf("^(%s)$", pattern);
    int r = regcomp(re, anchored, REG_EXTENDED | REG_NOSUB);
    if (r != 0) {
        char msg[256];
        regerror(r, re, msg, sizeof(msg));
        return err_set(err, -EINVAL, "%s: regex \"%s\" does not compile: %s", what, pattern, msg);
    }
    return 0;
}

bool pol__match(const pol_match *m, const char *s)
{
    if (!m->is_regex)
        return strcmp(m->text, s) == 0;
    return regexec(&m->re, s, 0, NULL, 0) == 0;
}

static void match_clear(pol_match *m)
{
    if (m->is_regex && m->text)
        regfree(&m->re);
    free(m->text);
    m->text = NULL;
}

static void strv_clear(pol_strv *s)
{
    for (size_t i = 0; i < s->len; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->len = 0;
}

static void container_clear(pol_container *c)
{
    free(c->name);
    free(c->image_ref);
    free(c->manifest_digest);
    strv_clear(&c->layers);
    strv_clear(&c->args);
    for (size_t i = 0; i < c->env_len; i++)
        match_clear(&c->env[i]);
    free(c->env);
    free(c->cwd);
    free(c->gids);
    for (size_t i = 0; i < c->mounts_len; i++) {
        free(c->mounts[i].destination);
        free(c->mounts[i].type);
        match_clear(&c->mounts[i].source);
        strv_clear(&c->mounts[i].options);
    }
    free(c->mounts);
    for (int i = 0; i < POL_CAP_SETS; i++)
        strv_clear(&c->caps[i]);
    strv_clear(&c->sysctl_keys);
    strv_clear(&c->sysctl_values);
    for (size_t i = 0; i < c->secrets_len; i++) {
        free((char *)c->secrets[i].resource);
        free((char *)c->secrets[i].path);
        free((char *)c->secrets[i].env);
    }
    free(c->secrets);
    for (size_t i = 0; i < c->volumes_len; i++) {
        free((char *)c->volumes[i].name);
        free((char *)c->volumes[i].mount_point);
        free((char *)c->volumes[i].key);
        free((char *)c->volumes[i].anchor);
        free((char *)c->volumes[i].rollback);
    }
    free(c->volumes);
    for (size_t i = 0; i < c->exec_len; i++)
        strv_clear(&c->exec[i]);
    free(c->exec);
    free(c->signals);
    strv_clear(&c->copy);
}

void pol_free(pol_policy *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->containers_len; i++)
        container_clear(&p->containers[i]);
    free(p->containers);
    free(p->kbs_url);
    free(p->kbs_ca);
    free(p);
}

void pol__freep(pol_policy **p)
{
    pol_free(*p);
}

size_t pol_container_count(const pol_policy *p)
{
    return p->containers_len;
}

const char *pol_container_name(const pol_policy *p, size_t index)
{
    return index < p->containers_len ? p->containers[index].name : NULL;
}

/* ---- strict member checking ---- */

/* Refuse members not in @allowed (NULL-terminated). */
static int check_members(const json_t *obj, const char *const *allowed, const char *what,
                         cista_error **err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(allowed[i], k) == 0;
        if (!ok)
            return err_set(err, -EINVAL,
                           "%s: unknown member \"%s\" (a misspelt rule would be silently lost, "
                           "so unknown members are refused)",
                           what, k);
    }
    return 0;
}

static int get_str(char **out, const json_t *obj, const char *key, bool required, const char *what,
                   cista_error **err)
{
    const char *s;
    int r = js_get_string(&s, obj, key, required, what, err);
    if (r < 0)
        return r;
    *out = s ? xstrdup(s) : NULL;
    return 0;
}

static int str_of(const char **out, const json_t *v, const char *what, cista_error **err)
{
    if (!json_is_string(v))
        return err_set(err, -EINVAL, "%s: must be a string", what);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return err_set(err, -EINVAL, "%s: contains a NUL character", what);
    *out = json_string_value(v);
    return 0;
}

static int strv_from(pol_strv *out, const json_t *arr, const char *what, cista_error **err)
{
    if (!arr)
        return 0;
    if (!json_is_array(arr))
        return err_set(err, -EINVAL, "%s: must be an array of strings", what);
    size_t n = json_array_size(arr);
    if (n > MAX_LIST)
        return err_set(err, -EINVAL, "%s: %zu entries, more than the limit of %d", what, n,
                       MAX_LIST);
    out->v = xzalloc((n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *s = NULL;
        _cleanup_free_ char *w = xasprintf("%s[%zu]", what, i);
        int r = str_of(&s, json_array_get(arr, i), w, err);
        if (r < 0)
            return r;
        out->v[i] = xstrdup(s);
        out->len = i + 1;
    }
    return 0;
}

static int strv_member(pol_strv *out, const json_t *obj, const char *key, bool required,
                       const char *what, cista_error **err)
{
    json_t *a;
    int r = js_get_array(&a, obj, key, required, what, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *w = xasprintf("%s.%s", what, key);
    return strv_from(out, a, w, err);
}

static int bool_member(bool *out, const json_t *obj, const char *key, const char *what,
                       cista_error **err)
{
    return js_get_bool(out, obj, key, false, what, err);
}

static int abs_path(const char *s, const char *what, cista_error **err)
{
    _cleanup_free_ char *n = pol_path_normalize(s);
    if (!n)
        return err_set(err, -EINVAL, "%s: \"%s\" is not an absolute path without \"..\"", what, s);
    if (strcmp(n, s) != 0)
        return err_set(err, -EINVAL, "%s: \"%s\" is not normalised (write \"%s\")", what, s, n);
    return 0;
}

static int match_from(pol_match *out, const json_t *v, const char *what, cista_error **err)
{
    static const char *const keys[] = {"exact", "regex", NULL};
    if (!json_is_object(v))
        return err_set(err, -EINVAL, "%s: must be an object {\"exact\": ...} or {\"regex\": ...}",
                       what);
    int r = check_members(v, keys, what, err);
    if (r < 0)
        return r;
    const char *exact, *regex;
    if ((r = js_get_string(&exact, v, "exact", false, what, err)) < 0 ||
        (r = js_get_string(&regex, v, "regex", false, what, err)) < 0)
        return r;
    if (!!exact == !!regex)
        return err_set(err, -EINVAL, "%s: needs exactly one of \"exact\" and \"regex\"", what);
    if (exact) {
        out->text = xstrdup(exact);
        return 0;
    }
    if ((r = pol__regex_compile(&out->re, regex, what, err)) < 0)
        return r;
    out->is_regex = true;
    out->text = xstrdup(regex);
    return 0;
}

static int digest_ok(const char *d)
{
    if (strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71)
        return 0;
    for (const char *c = d + 7; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return 0;
    return 1;
}

static int parse_image(pol_container *c, const json_t *img, const char *what, cista_error **err)
{
    static const char *const keys[] = {"reference", "manifest_digest", "layers", NULL};
    int r = check_members(img, keys, what, err);
    if (r < 0 || (r = get_str(&c->image_ref, img, "reference", false, what, err)) < 0 ||
        (r = get_str(&c->manifest_digest, img, "manifest_digest", true, what, err)) < 0 ||
        (r = strv_member(&c->layers, img, "layers", true, what, err)) < 0)
        return r;
    if (!digest_ok(c->manifest_digest))
        return err_set(err, -EINVAL, "%s.manifest_digest: \"%s\" is not sha256:<64 hex>", what,
                       c->manifest_digest);
    for (size_t i = 0; i < c->layers.len; i++)
        if (!digest_ok(c->layers.v[i]))
            return err_set(err, -EINVAL, "%s.layers[%zu]: \"%s\" is not sha256:<64 hex>", what, i,
                           c->layers.v[i]);
    c->has_image = true;
    return 0;
}

static int parse_uid(uint32_t *out, const json_t *obj, const char *key, const char *what,
                     cista_error **err)
{
    int64_t v;
    int r = js_get_int(&v, obj, key, true, what, err);
    if (r < 0)
        return r;
    if (v < 0 || v > UINT32_MAX - 1)
        return err_set(err, -EINVAL, "%s.%s: %lld is not a valid id", what, key, (long long)v);
    *out = (uint32_t)v;
    return 0;
}

static int parse_process(pol_container *c, const json_t *proc, const char *what, cista_error **err)
{
    static const char *const keys[] = {"args", "env", "cwd", "user", "no_new_privileges", NULL};
    int r = check_members(proc, keys, what, err);
    if (r < 0 || (r = strv_member(&c->args, proc, "args", true, what, err)) < 0 ||
        (r = get_str(&c->cwd, proc, "cwd", true, what, err)) < 0 ||
        (r = bool_member(&c->no_new_privileges, proc, "no_new_privileges", what, err)) < 0)
        return r;
    if (c->args.len == 0)
        return err_set(err, -EINVAL, "%s.args: must not be empty", what);
    _cleanup_free_ char *wcwd = xasprintf("%s.cwd", what);
    if ((r = abs_path(c->cwd, wcwd, err)) < 0)
        return r;

    json_t *env;
    if ((r = js_get_array(&env, proc, "env", false, what, err)) < 0)
        return r;
    if (env) {
        size_t n = json_array_size(env);
        if (n > MAX_LIST)
            return err_set(err, -EINVAL, "%s.env: more than %d rules", what, MAX_LIST);
        c->env = xzalloc((n + 1) * sizeof(*c->env));
        for (size_t i = 0; i < n; i++) {
            _cleanup_free_ char *w = xasprintf("%s.env[%zu]", what, i);
            if ((r = match_from(&c->env[i], json_array_get(env, i), w, err)) < 0)
                return r;
            c->env_len = i + 1;
            if (!c->env[i].is_regex && !strchr(c->env[i].text, '='))
                return err_set(err, -EINVAL, "%s: \"%s\" is not NAME=VALUE", w, c->env[i].text);
        }
    }

    json_t *user;
    static const char *const ukeys[] = {"uid", "gid", "additional_gids", NULL};
    _cleanup_free_ char *wu = xasprintf("%s.user", what);
    if ((r = js_get_object(&user, proc, "user", true, what, err)) < 0 ||
        (r = check_members(user, ukeys, wu, err)) < 0 ||
        (r = parse_uid(&c->uid, user, "uid", wu, err)) < 0 ||
        (r = parse_uid(&c->gid, user, "gid", wu, err)) < 0)
        return r;
    json_t *gids;
    if ((r = js_get_array(&gids, user, "additional_gids", false, wu, err)) < 0)
        return r;
    if (gids) {
        size_t n = json_array_size(gids);
        if (n > MAX_LIST)
            return err_set(err, -EINVAL, "%s.additional_gids: too many", wu);
        c->gids = xzalloc((n + 1) * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++) {
            json_t *g = json_array_get(gids, i);
            if (!json_is_integer(g) || json_integer_value(g) < 0 ||
                json_integer_value(g) > UINT32_MAX - 1)
                return err_set(err, -EINVAL, "%s.additional_gids[%zu]: not a valid gid", wu, i);
            c->gids[i] = (uint32_t)json_integer_value(g);
            c->gids_len = i + 1;
        }
    }
    return 0;
}

static int parse_mounts(pol_container *c, const json_t *arr, const char *what, cista_error **err)
{
    static const char *const keys[] = {"destination", "type",      "source",
                                       "options",     "read_only", NULL};
    size_t n = json_array_size(arr);
    if (n > MAX_LIST)
        return err_set(err, -EINVAL, "%s: more than %d mounts", what, MAX_LIST);
    c->mounts = xzalloc((n + 1) * sizeof(*c->mounts));
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(arr, i);
        pol_mount *pm = &c->mounts[i];
        c->mounts_len = i + 1;
        _cleanup_free_ char *w = xasprintf("%s[%zu]", what, i);
        if (!json_is_object(m))
            return err_set(err, -EINVAL, "%s: must be an object", w);
        int r = check_members(m, keys, w, err);
        if (r < 0 || (r = get_str(&pm->destination, m, "destination", true, w, err)) < 0 ||
            (r = get_str(&pm->type, m, "type", true, w, err)) < 0 ||
            (r = strv_member(&pm->options, m, "options", false, w, err)) < 0 ||
            (r = bool_member(&pm->read_only, m, "read_only", w, err)) < 0)
            return r;
        _cleanup_free_ char *wd = xasprintf("%s.destination", w);
        if ((r = abs_path(pm->destination, wd, err)) < 0)
            return r;
        json_t *src = json_object_get(m, "source");
        _cleanup_free_ char *ws = xasprintf("%s.source", w);
        if (!src)
            return err_set(err, -EINVAL, "%s: member \"source\" is missing", w);
        if ((r = match_from(&pm->source, src, ws, err)) < 0)
            return r;
    }
    return 0;
}

static int parse_caps(pol_container *c, const json_t *caps, const char *what, cista_error **err)
{
    static const char *const keys[] = {"bounding",  "effective", "inheritable",
                                       "permitted", "ambient",   NULL};
    int r = check_members(caps, keys, what, err);
    for (int i = 0; r == 0 && i < POL_CAP_SETS; i++)
        r = strv_member(&c->caps[i], caps, pol__cap_set_names[i], false, what, err);
    return r;
}

static int parse_sysctls(pol_container *c, const json_t *obj, const char *what, cista_error **err)
{
    size_t n = json_object_size(obj);
    if (n > MAX_LIST)
        return err_set(err, -EINVAL, "%s: too many sysctls", what);
    c->sysctl_keys.v = xzalloc((n + 1) * sizeof(char *));
    c->sysctl_values.v = xzalloc((n + 1) * sizeof(char *));
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        const char *s = NULL;
        _cleanup_free_ char *w = xasprintf("%s.%s", what, k);
        int r = str_of(&s, v, w, err);
        if (r < 0)
            return r;
        c->sysctl_keys.v[c->sysctl_keys.len++] = xstrdup(k);
        c->sysctl_values.v[c->sysctl_values.len++] = xstrdup(s);
    }
    return 0;
}

bool pol__kbs_resource_ok(const char *res)
{
    /* kbs:///repo/type/tag: three non-empty segments, as the KBS expects. */
    if (!res || strncmp(res, "kbs:///", 7) != 0)
        return false;
    const char *p = res + 7;
    int slashes = 0;
    if (!*p || p[strlen(p) - 1] == '/' || strstr(p, "//"))
        return false;
    for (; *p; p++)
        slashes += *p == '/';
    return slashes == 2;
}

bool pol__volume_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > POL_MAX_VOLUME_NAME)
        return false;
    /* the name becomes a directory name in the sandbox: no "/", no "..", no leading "." */
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || !strchr("_.-", ch)))
            return false;
    }
    return true;
}

int pol__volume_check(const char *what, const char *name, const char *key, const char *anchor,
                      const char **rollback, cista_error **err)
{
    if (!pol__volume_name_ok(name))
        return err_set(err, -EINVAL,
                       "%s.name: \"%s\" is not a volume name (1 to %d of A-Z a-z 0-9 _ . -, "
                       "starting with a letter or digit)",
                       what, name ? name : "", POL_MAX_VOLUME_NAME);
    if (!key)
        return err_set(err, -EINVAL,
                       "%s: member \"key\" is missing (the KBS resource kbs:///repo/type/tag "
                       "holding the volume's master key)",
                       what);
    if (!pol__kbs_resource_ok(key))
        return err_set(err, -EINVAL, "%s.key: \"%s\" is not kbs:///repo/type/tag", what, key);
    if (anchor && !pol__kbs_resource_ok(anchor))
        return err_set(err, -EINVAL,
                       "%s.anchor: \"%s\" is not kbs:///repo/type/tag (the KBS counter that "
                       "keeps the volume's newest generation)",
                       what, anchor);
    if (!*rollback) {
        *rollback = anchor ? "strict" : "off";
        return 0;
    }
    if (strcmp(*rollback, "strict") && strcmp(*rollback, "reset") && strcmp(*rollback, "off"))
        return err_set(err, -EINVAL, "%s.rollback: \"%s\" is not strict, reset or off", what,
                       *rollback);
    if (!anchor && strcmp(*rollback, "off"))
        return err_set(err, -EINVAL,
                       "%s.rollback: \"%s\" needs an \"anchor\" (a KBS counter that remembers "
                       "the volume's newest generation); without an anchor only \"off\" is "
                       "possible",
                       what, *rollback);
    return 0;
}

static int parse_secrets(pol_container *c, const json_t *arr, const char *what, cista_error **err)
{
    static const char *const keys[] = {"resource", "path", "env", NULL};
    size_t n = json_array_size(arr);
    if (n > MAX_LIST)
        return err_set(err, -EINVAL, "%s: too many secrets", what);
    c->secrets = xzalloc((n + 1) * sizeof(*c->secrets));
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        _cleanup_free_ char *w = xasprintf("%s[%zu]", what, i);
        if (!json_is_object(s))
            return err_set(err, -EINVAL, "%s: must be an object", w);
        char *res = NULL, *path = NULL, *env = NULL;
        int r = check_members(s, keys, w, err);
        if (r == 0)
            r = get_str(&res, s, "resource", true, w, err);
        if (r == 0)
            r = get_str(&path, s, "path", false, w, err);
        if (r == 0)
            r = get_str(&env, s, "env", false, w, err);
        c->secrets[i] = (pol_secret){res, path, env};
        c->secrets_len = i + 1;
        if (r < 0)
            return r;
        if (!pol__kbs_resource_ok(res))
            return err_set(err, -EINVAL, "%s.resource: \"%s\" is not kbs:///repo/type/tag", w, res);
        if (!!path == !!env)
            return err_set(err, -EINVAL, "%s: needs exactly one of \"path\" and \"env\"", w);
        _cleanup_free_ char *wp = xasprintf("%s.path", w);
        if (path && (r = abs_path(path, wp, err)) < 0)
            return r;
        if (env && (!*env || strchr(env, '=')))
            return err_set(err, -EINVAL, "%s.env: \"%s\" is not a variable name", w, env);
    }
    return 0;
}

static int parse_volumes(pol_container *c, const json_t *arr, const char *what, cista_error **err)
{
    static const char *const keys[] = {"name", "mount_point", "key", "anchor", "rollback", NULL};
    size_t n = json_array_size(arr);
    if (n > MAX_LIST)
        return err_set(err, -EINVAL, "%s: too many volumes", what);
    c->volumes = xzalloc((n + 1) * sizeof(*c->volumes));
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        _cleanup_free_ char *w = xasprintf("%s[%zu]", what, i);
        pol_volume *pv = &c->volumes[i];
        c->volumes_len = i + 1;
        if (!json_is_object(v))
            return err_set(err, -EINVAL, "%s: must be an object", w);
        char *name = NULL, *mp = NULL, *key = NULL, *anchor = NULL, *rollback = NULL;
        int r = check_members(v, keys, w, err);
        if (r == 0)
            r = get_str(&name, v, "name", true, w, err);
        if (r == 0)
            r = get_str(&mp, v, "mount_point", true, w, err);
        if (r == 0)
            r = get_str(&key, v, "key", false, w, err);
        if (r == 0)
            r = get_str(&anchor, v, "anchor", false, w, err);
        if (r == 0)
            r = get_str(&rollback, v, "rollback", false, w, err);
        *pv = (pol_volume){name, mp, key, anchor, rollback};
        if (r < 0)
            return r;
        _cleanup_free_ char *wm = xasprintf("%s.mount_point", w);
        if ((r = abs_path(mp, wm, err)) < 0)
            return r;
        if (!strcmp(mp, "/"))
            return err_set(err, -EINVAL, "%s: a volume cannot replace the root file system", wm);
        const char *rb = rollback;
        if ((r = pol__volume_check(w, name, key, anchor, &rb, err)) < 0)
            return r;
        if (!rollback)
            pv->rollback = xstrdup(rb);
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(c->volumes[j].name, name))
                return err_set(err, -EINVAL, "%s.name: volume \"%s\" appears twice", w, name);
            if (!strcmp(c->volumes[j].mount_point, mp))
                return err_set(err, -EINVAL,
                               "%s.mount_point: \"%s\" is already the mount point of volume "
                               "\"%s\"",
                               w, mp, c->volumes[j].name);
        }
    }
    return 0;
}

static int parse_exec(pol_container *c, const json_t *arr, const char *what, cista_error **err)
{
    size_t n = json_array_size(arr);
    if (n > MAX_LIST)
        return err_set(err, -EINVAL, "%s: too many commands", what);
    c->exec = xzalloc((n + 1) * sizeof(*c->exec));
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *w = xasprintf("%s[%zu]", what, i);
        c->exec_len = i + 1;
        int r = strv_from(&c->exec[i], json_array_get(arr, i), w, err);
        if (r < 0)
            return r;
        if (!json_is_array(json_array_get(arr, i)) || c->exec[i].len == 0)
            return err_set(err, -EINVAL, "%s: must be a non-empty array of strings", w);
    }
    return 0;
}

static int parse_signals(pol_container *c, const json_t *arr, const char *what, cista_error **err)
{
    size_t n = json_array_size(arr);
    if (n > 64)
        return err_set(err, -EINVAL, "%s: too many signals", what);
    c->signals = xzalloc((n + 1) * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_integer(s) || json_integer_value(s) < 1 || json_integer_value(s) > 64)
            return err_set(err, -EINVAL, "%s[%zu]: not a signal number 1..64", what, i);
        c->signals[i] = (int)json_integer_value(s);
        c->signals_len = i + 1;
    }
    return 0;
}

static int parse_container(pol_container *c, const json_t *obj, size_t index, cista_error **err)
{
    static const char *const keys[] = {
        "name",    "image",   "process", "mounts", "capabilities", "sysctls", "read_only_rootfs",
        "secrets", "volumes", "exec",    "logs",   "signals",      "copy",    NULL};
    _cleanup_free_ char *what = xasprintf("policy: containers[%zu]", index);
    if (!json_is_object(obj))
        return err_set(err, -EINVAL, "%s: must be an object", what);
    int r = check_members(obj, keys, what, err);
    if (r < 0 || (r = get_str(&c->name, obj, "name", true, what, err)) < 0)
        return r;
    if (!*c->name || strlen(c->name) > 253)
        return err_set(err, -EINVAL, "%s.name: must be 1 to 253 characters", what);
    free(what);
    what = xasprintf("policy: container \"%s\"", c->name);

    json_t *o;
    _cleanup_free_ char *w = NULL;
#define SUB(key) (free(w), w = xasprintf("%s.%s", what, key))
    if ((r = js_get_object(&o, obj, "image", false, what, err)) < 0)
        return r;
    if (o && (r = parse_image(c, o, SUB("image"), err)) < 0)
        return r;
    if ((r = js_get_object(&o, obj, "process", true, what, err)) < 0 ||
        (r = parse_process(c, o, SUB("process"), err)) < 0)
        return r;
    if ((r = js_get_array(&o, obj, "mounts", false, what, err)) < 0)
        return r;
    if (o && (r = parse_mounts(c, o, SUB("mounts"), err)) < 0)
        return r;
    if ((r = js_get_object(&o, obj, "capabilities", false, what, err)) < 0)
        return r;
    if (o && (r = parse_caps(c, o, SUB("capabilities"), err)) < 0)
        return r;
    if ((r = js_get_object(&o, obj, "sysctls", false, what, err)) < 0)
        return r;
    if (o && (r = parse_sysctls(c, o, SUB("sysctls"), err)) < 0)
        return r;
    if ((r = bool_member(&c->read_only_rootfs, obj, "read_only_rootfs", what, err)) < 0)
        return r;
    if ((r = js_get_array(&o, obj, "secrets", false, what, err)) < 0)
        return r;
    if (o && (r = parse_secrets(c, o, SUB("secrets"), err)) < 0)
        return r;
    if ((r = js_get_array(&o, obj, "volumes", false, what, err)) < 0)
        return r;
    if (o && (r = parse_volumes(c, o, SUB("volumes"), err)) < 0)
        return r;
    if ((r = js_get_array(&o, obj, "exec", false, what, err)) < 0)
        return r;
    if (o && (r = parse_exec(c, o, SUB("exec"), err)) < 0)
        return r;
    if ((r = bool_member(&c->logs, obj, "logs", what, err)) < 0)
        return r;
    if ((r = js_get_array(&o, obj, "signals", false, what, err)) < 0)
        return r;
    if (o && (r = parse_signals(c, o, SUB("signals"), err)) < 0)
        return r;
    if ((r = strv_member(&c->copy, obj, "copy", false, what, err)) < 0)
        return r;
    for (size_t i = 0; i < c->copy.len; i++) {
        _cleanup_free_ char *wc = xasprintf("%s.copy[%zu]", what, i);
        /* A trailing "/" means "anything below"; check the rest. */
        _cleanup_free_ char *base = xstrdup(c->copy.v[i]);
        size_t bl = strlen(base);
        if (bl > 1 && base[bl - 1] == '/')
            base[bl - 1] = '\0';
        if ((r = abs_path(base, wc, err)) < 0)
            return r;
    }
#undef SUB
    return 0;
}

/*
 * "kbs": {"url": "https://kbs.example:8443", "ca": "-----BEGIN CERTIFICATE-----..."}: the key
 * broker the workload's keys and secrets must come from, and the CA (PEM) its certificate must
 * chain to. Part of the measured policy, so the host cannot point the TEE at a broker of its own.
 */
static int parse_kbs(pol_policy *p, const json_t *kbs, cista_error **err)
{
    if (!kbs)
        return 0;
    if (!json_is_object(kbs))
        return err_set(err, -EINVAL, "policy: kbs must be an object {\"url\", \"ca\"}");
    static const char *const keys[] = {"url", "ca", NULL};
    int r = check_members(kbs, keys, "policy.kbs", err);
    if (r < 0)
        return r;
    const char *url = NULL, *ca = NULL;
    if ((r = js_get_string(&url, kbs, "url", true, "policy.kbs", err)) < 0 ||
        (r = js_get_string(&ca, kbs, "ca", false, "policy.kbs", err)) < 0)
        return r;
    if ((strncmp(url, "https://", 8) && strncmp(url, "http://", 7)) || strlen(url) > 2048 ||
        strpbrk(url, " \t\r\n?#"))
        return err_set(err, -EINVAL,
                       "policy.kbs.url \"%.80s\" is not an http(s) URL of a KBS (no path "
                       "query or fragment)",
                       url);
    if (ca && !strstr(ca, "-----BEGIN CERTIFICATE-----"))
        return err_set(err, -EINVAL, "policy.kbs.ca is not a PEM certificate (bundle)");
    p->kbs_url = xstrdup(url);
    /* the same broker with or without a trailing slash */
    for (size_t n = strlen(p->kbs_url); n > 8 && p->kbs_url[n - 1] == '/'; n--)
        p->kbs_url[n - 1] = '\0';
    p->kbs_ca = ca ? xstrdup(ca) : NULL;
    return 0;
}

int pol_parse(pol_policy **out, const void *data, size_t size, cista_error **err)
{
    _cleanup_json_ json_t *doc = NULL;
    int r = js_parse_object(&doc, data, size, POL_MAX_POLICY, "policy", err);
    if (r < 0)
        return r;
    static const char *const keys[] = {"version", "containers", "kbs", NULL};
    if ((r = check_members(doc, keys, "policy", err)) < 0)
        return r;
    const char *version;
    if ((r = js_get_string(&version, doc, "version", true, "policy", err)) < 0)
        return r;
    if (strcmp(version, POL_VERSION) != 0)
        return err_set(err, -EINVAL,
                       "policy: version \"%s\" is not supported (this cista reads \"%s\")", version,
                       POL_VERSION);
    json_t *arr;
    if ((r = js_get_array(&arr, doc, "containers", true, "policy", err)) < 0)
        return r;
    size_t n = json_array_size(arr);
    if (n > MAX_CONTAINERS)
        return err_set(err, -EINVAL, "policy: %zu containers, more than the limit of %d", n,
                       MAX_CONTAINERS);
    pol_policy *p = xzalloc(sizeof(*p));
    _cleanup_pol_ pol_policy *guard = p;
    p->containers = xzalloc((n + 1) * sizeof(*p->containers));
    for (size_t i = 0; i < n; i++) {
        p->containers_len = i + 1;
        if ((r = parse_container(&p->containers[i], json_array_get(arr, i), i, err)) < 0)
            return r;
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->containers[j].name, p->containers[i].name) == 0)
                return err_set(err, -EINVAL, "policy: container name \"%s\" appears twice",
                               p->containers[i].name);
    }
    if ((r = parse_kbs(p, json_object_get(doc, "kbs"), err)) < 0)
        return r;
    *out = steal_ptr(&guard);
    return 0;
}

int pol_get_kbs(const char **out_url, const char **out_ca, const pol_policy *p)
{
    *out_url = p->kbs_url;
    *out_ca = p->kbs_ca;
    return p->kbs_url != NULL;
}

int pol_load_file(pol_policy **out, const char *path, cista_error **err)
{
    _cleanup_free_ char *data = NULL;
    size_t size;
    int r = util_read_file(&data, &size, path, POL_MAX_POLICY, err);
    if (r < 0)
        return err_wrap(err, "policy %s", path);
    r = pol_parse(out, data, size, err);
    if (r < 0)
        return err_wrap(err, "%s", path);
    return 0;
}

char *pol_canonical(const json_t *doc, size_t *out_size)
{
    char *s = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!s)
        abort();
    size_t n = strlen(s);
    char *t = xrealloc(s, n + 2);
    t[n] = '\n';
    t[n + 1] = '\0';
    if (out_size)
        *out_size = n + 1;
    return t;
}

void pol_hash(uint8_t out[POL_HASH_SIZE], const void *data, size_t size)
{
    crypto_hash_oneshot(CRYPTO_SHA256, data, size, out);
}

json_t *pol_hash_encodings(const uint8_t digest[POL_HASH_SIZE])
{
    uint8_t mrconfigid[48] = {0};
    memcpy(mrconfigid, digest, POL_HASH_SIZE);
    /* A PCR starts at zero and extend sets it to H(old || new). */
    uint8_t pcr_in[2 * POL_HASH_SIZE] = {0};
    uint8_t pcr[POL_HASH_SIZE];
    memcpy(pcr_in + POL_HASH_SIZE, digest, POL_HASH_SIZE);
    crypto_hash_oneshot(CRYPTO_SHA256, pcr_in, sizeof(pcr_in), pcr);
    _cleanup_free_ char *hex = hex_encode(digest, POL_HASH_SIZE);
    _cleanup_free_ char *mr = hex_encode(mrconfigid, sizeof(mrconfigid));
    _cleanup_free_ char *pcrv = hex_encode(pcr, sizeof(pcr));
    return json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s}", "sha256", hex, "snp_host_data", hex,
                     "tdx_mrconfigid", mr, "tpm_pcr", 23, "tpm_pcr_extend", hex, "tpm_pcr_value",
                     pcrv, "sim_host_data", hex);
}

char *pol_path_normalize(const char *path)
{
    if (!path || path[0] != '/')
        return NULL;
    size_t n = strlen(path);
    if (n > PATH_MAX)
        return NULL;
    char *out = xmalloc(n + 2);
    size_t o = 0;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 1 && p[0] == '.') {
            p += len;
            continue;
        }
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            free(out);
            return NULL;
        }
        out[o++] = '/';
        memcpy(out + o, p, len);
        o += len;
        p += len;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return out;
}

int pol_get_secrets(const pol_secret **out, size_t *out_count, const pol_policy *p,
                    const char *container, cista_error **err)
{
    for (size_t i = 0; i < p->containers_len; i++) {
        if (strcmp(p->containers[i].name, container) == 0) {
            *out = p->containers[i].secrets;
            *out_count = p->containers[i].secrets_len;
            return 0;
        }
    }
    return err_set(err, -ENOENT, "policy has no container \"%s\"", container);
}

int pol_get_volumes(const pol_volume **out, size_t *out_count, const pol_policy *p,
                    const char *container, cista_error **err)
{
    for (size_t i = 0; i < p->containers_len; i++) {
        if (strcmp(p->containers[i].name, container) == 0) {
            *out = p->containers[i].volumes;
            *out_count = p->containers[i].volumes_len;
            return 0;
        }
    }
    return err_set(err, -ENOENT, "policy has no container \"%s\"", container);
}
