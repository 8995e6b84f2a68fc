/*
 * gen.c - generating a policy from OCI image configs and Kubernetes YAML.
 *
 * The generator writes down what the workload will legitimately ask for:
 * the process Kubernetes would start (command/args over entrypoint/cmd,
 * $(VAR) expansion as the kubelet does it), the env it would set, the mounts
 * the kubelet and the runtime add, the capabilities containerd grants. It
 * never guesses what it cannot know: an image it was not given, a user name
 * it cannot resolve, an argument that depends on a runtime value, or a
 * privileged container make it fail with a message saying what to do.
 *
 * Determinism: containers keep their order in the inputs, rule lists are
 * sorted and de-duplicated, and the output is pol_canonical().
 */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "image/image.h"
#include "policy/pol_int.h"
#include "util/buf.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define KUBELET_POD "^/var/lib/kubelet/pods/[0-9a-f-]{36}"

/* containerd's and CRI-O's default capability set, sorted. */
static const char *const default_caps[] = {
    "CAP_AUDIT_WRITE", "CAP_CHOWN",   "CAP_DAC_OVERRIDE",     "CAP_FOWNER",    "CAP_FSETID",
    "CAP_KILL",        "CAP_MKNOD",   "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",   "CAP_SETFCAP",
    "CAP_SETGID",      "CAP_SETPCAP", "CAP_SETUID",           "CAP_SYS_CHROOT"};

typedef struct {
    char *spec;      /* the YAML image it provides, or NULL */
    const char *ref; /* borrowed from the options */
    img_image *img;  /* opened on first use */
} gen_image;

typedef struct {
    const pol_gen_opts *opts;
    gen_image *images;
    size_t images_len;
    json_t *docs;       /* the YAML stream */
    json_t *containers; /* output array */
    cista_error **err;
} gen;

/* ---- small helpers ---- */

static const char *jstr(const json_t *o, const char *k)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *jobj(const json_t *o, const char *k)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    return json_is_object(v) ? v : NULL;
}

static json_t *jarr(const json_t *o, const char *k)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    return json_is_array(v) ? v : NULL;
}

/* Type-check an optional member; @what names it in the error. */
static int want(const json_t *o, const char *k, json_type t, const char *what, cista_error **err)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    if (!v || json_is_null(v) || json_typeof(v) == t)
        return 0;
    if (t == JSON_TRUE && json_is_boolean(v))
        return 0;
    static const char *const names[] = {"a mapping", "a list",    "a string",  "an integer",
                                        "a number",  "a boolean", "a boolean", "null"};
    return err_set(err, -EINVAL, "%s.%s must be %s", what, k, names[t]);
}

/* Escape POSIX ERE metacharacters so @s matches literally. Caller frees. */
static char *ere_escape(const char *s)
{
    cbuf b = CBUF_INIT;
    for (; *s; s++) {
        if (strchr(".[]{}()\\*+?|^$", *s))
            buf_put(&b, "\\", 1);
        buf_put(&b, s, 1);
    }
    buf_put(&b, "", 0);
    return (char *)buf_steal(&b, NULL);
}

static json_t *match_exact(const char *s)
{
    return json_pack("{s:s}", "exact", s);
}

static json_t *match_regex(const char *s)
{
    return json_pack("{s:s}", "regex", s);
}

static int cmp_json_str(const void *a, const void *b)
{
    char *x = json_dumps(*(json_t *const *)a, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *y = json_dumps(*(json_t *const *)b, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    int r = strcmp(x, y);
    free(x);
    free(y);
    return r;
}

/* Sort an array by its canonical text and drop duplicates (new array). */
static json_t *sorted_unique(json_t *arr)
{
    size_t n = json_array_size(arr);
    json_t **v = xmalloc((n + 1) * sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    qsort(v, n, sizeof(*v), cmp_json_str);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        if (i == 0 || !json_equal(v[i], v[i - 1]))
            json_array_append(out, v[i]);
    free(v);
    json_decref(arr);
    return out;
}

/* ---- images ---- */

static bool is_transport(const char *s)
{
    return !strncmp(s, "oci:", 4) || !strncmp(s, "oci-archive:", 12) ||
           !strncmp(s, "docker-archive:", 15);
}

/* Kubernetes image "reg/ns/name:tag@sha256:..." -> name, tag (default latest), digest. */
static void split_k8s_image(const char *y, char **name, char **tag, char **digest)
{
    _cleanup_free_ char *s = xstrdup(y);
    char *at = strchr(s, '@');
    *digest = NULL;
    if (at) {
        *digest = xstrdup(at + 1);
        *at = '\0';
    }
    char *slash = strrchr(s, '/');
    char *base = slash ? slash + 1 : s;
    char *colon = strchr(base, ':');
    *tag = xstrdup(colon ? colon + 1 : (at ? "" : "latest"));
    if (colon)
        *colon = '\0';
    *name = xstrdup(base);
}

/* "dir/nginx.tar" -> "nginx" */
static char *ref_base(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *b = xstrdup(slash && slash[1] ? slash + 1 : path);
    static const char *const exts[] = {".tar.gz", ".tgz", ".tar", ".oci"};
    for (size_t i = 0; i < ARRAY_LEN(exts); i++) {
        if (util_has_suffix(b, exts[i])) {
            b[strlen(b) - strlen(exts[i])] = '\0';
            break;
        }
    }
    return b;
}

static int open_image(gen_image *gi, cista_error **err)
{
    if (gi->img)
        return 0;
    int r = img_open(&gi->img, gi->ref, err);
    if (r < 0)
        return err_wrap(err, "image %s", gi->ref);
    return 0;
}

/* Find the --image that provides YAML image @y: an explicit "Y=REF" first, else a
 * reference whose name and tag match; never a guess between several. */
static int find_image(gen_image **out, gen *g, const char *y, const char *what)
{
    cista_error **err = g->err;
    *out = NULL;
    for (size_t i = 0; i < g->images_len; i++) {
        if (g->images[i].spec && strcmp(g->images[i].spec, y) == 0) {
            *out = &g->images[i];
            break;
        }
    }
    _cleanup_free_ char *name = NULL, *tag = NULL, *digest = NULL;
    split_k8s_image(y, &name, &tag, &digest);
    if (!*out) {
        for (size_t i = 0; i < g->images_len; i++) {
            if (g->images[i].spec)
                continue;
            img_ref ref;
            cista_error *e2 = NULL;
            if (img_ref_parse(&ref, g->images[i].ref, &e2) < 0) {
                err_free(e2);
                continue;
            }
            _cleanup_free_ char *b = ref_base(ref.path);
            const char *rt = ref.tag ? ref.tag : "latest";
            bool match = strcmp(b, name) == 0 && (strcmp(rt, tag) == 0 || !*tag);
            img_ref_clear(&ref);
            if (!match)
                continue;
            if (*out)
                return err_set(err, -EINVAL,
                               "%s: image \"%s\" matches both --image %s and --image %s; say "
                               "which with --image '%s=REF'",
                               what, y, (*out)->ref, g->images[i].ref, y);
            *out = &g->images[i];
        }
    }
    if (!*out) {
        if (g->opts->no_image_pinning)
            return 0;
        return err_set(err, -ENOENT,
                       "%s: no --image provides \"%s\" (looked for an image named \"%s\" with tag "
                       "\"%s\"); the policy pins image digests, so give it with --image "
                       "'%s=oci:DIR:TAG' (or a docker-archive:/oci-archive: reference)",
                       what, y, name, tag, y);
    }
    int r = open_image(*out, err);
    if (r < 0)
        return r;
    if (digest && *digest && strcmp(digest, img_manifest_digest((*out)->img)) != 0)
        return err_set(err, -EBADMSG, "%s: image \"%s\" pins manifest %s but %s has manifest %s",
                       what, y, digest, (*out)->ref, img_manifest_digest((*out)->img));
    return 0;
}

static json_t *image_rule(const gen_image *gi)
{
    json_t *layers = json_array();
    size_t n = img_layer_count(gi->img);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(layers, json_string(img_get_layer(gi->img, i)->diff_id));
    return json_pack("{s:s,s:s,s:o}", "reference", gi->ref, "manifest_digest",
                     img_manifest_digest(gi->img), "layers", layers);
}

/* ---- env and $(VAR) expansion ---- */

typedef struct {
    char *name;
    char *value; /* NULL: only known at run time */
} env_var;

typedef struct {
    env_var *v;
    size_t len;
} env_list;

static void env_clear(env_list *e)
{
    for (size_t i = 0; i < e->len; i++) {
        free(e->v[i].name);
        free(e->v[i].value);
    }
    free(e->v);
    e->v = NULL;
    e->len = 0;
}

static env_var *env_find(env_list *e, const char *name)
{
    for (size_t i = 0; i < e->len; i++)
        if (strcmp(e->v[i].name, name) == 0)
            return &e->v[i];
    return NULL;
}

/* Set (replacing an earlier value, as the runtime does); takes @value. */
static void env_set(env_list *e, const char *name, char *value)
{
    env_var *v = env_find(e, name);
    if (v) {
        free(v->value);
        v->value = value;
        return;
    }
    e->v = xrealloc(e->v, (e->len + 1) * sizeof(*e->v));
    e->v[e->len++] = (env_var){xstrdup(name), value};
}

/*
 * Kubernetes' $(VAR) expansion: "$$" is an escaped "$", "$(NAME)" becomes the
 * value of NAME when NAME is defined in @map and stays as written otherwise.
 * A reference to a variable whose value only exists at run time cannot be
 * pinned, so it is an error. Caller frees *out.
 */
static int expand(char **out, const char *s, env_list *map, const char *what, cista_error **err)
{
    cbuf b = CBUF_INIT;
    for (const char *p = s; *p;) {
        if (p[0] != '$' || !p[1]) {
            buf_put(&b, p++, 1);
            continue;
        }
        if (p[1] == '$') {
            buf_put(&b, "$", 1);
            p += 2;
            continue;
        }
        if (p[1] != '(') {
            buf_put(&b, p, 2);
            p += 2;
            continue;
        }
        const char *close = strchr(p + 2, ')');
        if (!close) {
            buf_puts(&b, p);
            break;
        }
        _cleanup_free_ char *name = xstrndup(p + 2, (size_t)(close - p - 2));
        env_var *v = map ? env_find(map, name) : NULL;
        if (v && !v->value) {
            buf_free(&b);
            return err_set(err, -EINVAL,
                           "%s: \"%s\" refers to $(%s), whose value is only known at run time "
                           "(valueFrom/envFrom); the policy pins arguments exactly, so write "
                           "the value instead",
                           what, s, name);
        }
        if (v)
            buf_puts(&b, v->value);
        else
            buf_put(&b, p, (size_t)(close - p + 1));
        p = close + 1;
    }
    buf_put(&b, "", 0);
    *out = (char *)buf_steal(&b, NULL);
    return 0;
}

static int strv_json(json_t **out, const json_t *arr, const char *what, cista_error **err)
{
    if (!json_is_array(arr))
        return err_set(err, -EINVAL, "%s must be a list of strings", what);
    *out = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v)) {
            json_decref(*out);
            return err_set(err, -EINVAL, "%s[%zu] must be a string", what, i);
        }
        json_array_append(*out, v);
    }
    return 0;
}

/* ---- per container ---- */

typedef struct {
    const json_t *pod_spec; /* NULL for an image-only container */
    const json_t *ctr;      /* the Kubernetes container, or NULL */
    const char *name;
    const gen_image *image; /* may be NULL with no_image_pinning */
    const char *what;       /* for errors */
    const json_t *claims;   /* a StatefulSet's volumeClaimTemplates, or NULL */
} ctr_in;

static int add_env_from(gen *g, env_list *env, const json_t *ef, const char *what)
{
    cista_error **err = g->err;
    const char *prefix = jstr(ef, "prefix");
    json_t *ref = jobj(ef, "configMapRef");
    const char *kind = "ConfigMap";
    if (!ref) {
        ref = jobj(ef, "secretRef");
        kind = "Secret";
    }
    const char *rname = jstr(ref, "name");
    if (!rname)
        return err_set(err, -EINVAL, "%s: needs configMapRef.name or secretRef.name", what);
    /* The values come from the host at run time; only the names can be pinned. */
    size_t i;
    json_t *d;
    json_array_foreach(g->docs, i, d)
    {
        const char *k = jstr(d, "kind");
        if (!k || strcmp(k, kind) != 0 || !jstr(jobj(d, "metadata"), "name") ||
            strcmp(jstr(jobj(d, "metadata"), "name"), rname) != 0)
            continue;
        static const char *const sections[] = {"data", "stringData", "binaryData"};
        for (size_t s = 0; s < ARRAY_LEN(sections); s++) {
            const char *key;
            json_t *v;
            json_object_foreach(jobj(d, sections[s]), key, v)
            {
                _cleanup_free_ char *full = xasprintf("%s%s", prefix ? prefix : "", key);
                env_set(env, full, NULL);
            }
        }
        return 0;
    }
    if (!prefix || !*prefix)
        return err_set(err, -EINVAL,
                       "%s: envFrom %s \"%s\" is not in the YAML and has no prefix, so any "
                       "variable name (LD_PRELOAD included) would have to be allowed; add the "
                       "%s to the YAML stream so its keys can be listed, or set a prefix",
                       what, kind, rname, kind);
    _cleanup_free_ char *marker = xasprintf("%s*", prefix);
    env_set(env, marker, NULL);
    return 0;
}

static int build_env(gen *g, json_t **out_rules, env_list *kenv, const ctr_in *in,
                     const img_config *cfg)
{
    cista_error **err = g->err;
    env_list all = {0};
    int r = 0;
    bool has_path = false;
    for (char **e = cfg ? cfg->env : NULL; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        _cleanup_free_ char *n = xstrndup(*e, (size_t)(eq - *e));
        has_path |= strcmp(n, "PATH") == 0;
        env_set(&all, n, xstrdup(eq + 1));
    }
    json_t *env = jarr(in->ctr, "env");
    size_t i;
    json_t *ev;
    json_array_foreach(env, i, ev)
    {
        _cleanup_free_ char *w = xasprintf("%s.env[%zu]", in->what, i);
        const char *n = jstr(ev, "name");
        if (!n || !*n || strchr(n, '=')) {
            r = err_set(err, -EINVAL, "%s: needs a name without \"=\"", w);
            goto out;
        }
        json_t *vj = json_object_get(ev, "value");
        if (json_object_get(ev, "valueFrom")) {
            env_set(kenv, n, NULL);
            env_set(&all, n, NULL);
            continue;
        }
        if (vj && !json_is_null(vj) && !json_is_string(vj)) {
            r = err_set(err, -EINVAL, "%s.value must be a string (quote it)", w);
            goto out;
        }
        char *val = NULL;
        if ((r = expand(&val, vj ? json_string_value(vj) ? json_string_value(vj) : "" : "", kenv, w,
                        err)) < 0)
            goto out;
        env_set(kenv, n, xstrdup(val));
        env_set(&all, n, val);
    }
    json_array_foreach(jarr(in->ctr, "envFrom"), i, ev)
    {
        _cleanup_free_ char *w = xasprintf("%s.envFrom[%zu]", in->what, i);
        if ((r = add_env_from(g, &all, ev, w)) < 0)
            goto out;
    }
    for (size_t s = 0; s < g->opts->secret_count; s++) {
        const pol_gen_secret *sec = &g->opts->secrets[s];
        if (sec->env && strcmp(sec->container, in->name) == 0)
            env_set(&all, sec->env, NULL);
    }

    json_t *rules = json_array();
    for (size_t k = 0; k < all.len; k++) {
        const env_var *v = &all.v[k];
        size_t nl = strlen(v->name);
        if (nl > 1 && v->name[nl - 1] == '*') {
            /* an envFrom prefix whose keys are unknown */
            _cleanup_free_ char *p = xstrndup(v->name, nl - 1);
            _cleanup_free_ char *pe = ere_escape(p);
            _cleanup_free_ char *re = xasprintf("^%s[A-Za-z0-9_.-]*=.*$", pe);
            json_array_append_new(rules, match_regex(re));
        } else if (v->value) {
            _cleanup_free_ char *kv = xasprintf("%s=%s", v->name, v->value);
            json_array_append_new(rules, match_exact(kv));
        } else {
            _cleanup_free_ char *ne = ere_escape(v->name);
            _cleanup_free_ char *re = xasprintf("^%s=.*$", ne);
            json_array_append_new(rules, match_regex(re));
        }
    }
    /* What the runtime itself sets (docs/policy.md, "Runtime rules"). */
    if (!has_path)
        json_array_append_new(rules, match_exact(DEFAULT_PATH));
    json_array_append_new(rules, match_regex("^HOSTNAME=[A-Za-z0-9._-]{0,253}$"));
    json_array_append_new(rules, match_exact("TERM=xterm"));
    if (in->pod_spec) {
        /* The kubelet's service environment: always the API server's, others unless
         * enableServiceLinks is false. Values are addresses and ports. */
        json_array_append_new(rules,
                              match_regex("^KUBERNETES_(SERVICE_(HOST|PORT(_HTTPS)?)|PORT(_443_TCP("
                                          "_(PROTO|PORT|ADDR))?)?)=[A-Za-z0-9.:/]*$"));
        json_t *links = json_object_get(in->pod_spec, "enableServiceLinks");
        if (!json_is_false(links)) {
            json_array_append_new(rules, match_regex("^[A-Z0-9_]+_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?"
                                                     ")=[A-Za-z0-9.:]*$"));
            json_array_append_new(rules, match_regex("^[A-Z0-9_]+_PORT(_[0-9]+_(TCP|UDP|SCTP)(_("
                                                     "PROTO|PORT|ADDR))?)?=[A-Za-z0-9.:/]*$"));
        }
    }
    *out_rules = sorted_unique(rules);
out:
    env_clear(&all);
    return r;
}

static int build_args(gen *g, json_t **out, const ctr_in *in, const img_config *cfg, env_list *kenv)
{
    cista_error **err = g->err;
    json_t *cmd = in->ctr ? json_object_get(in->ctr, "command") : NULL;
    json_t *args = in->ctr ? json_object_get(in->ctr, "args") : NULL;
    if (json_is_null(cmd))
        cmd = NULL;
    if (json_is_null(args))
        args = NULL;
    json_t *argv = json_array();
    int r = 0;
    _cleanup_free_ char *wc = xasprintf("%s.command", in->what);
    _cleanup_free_ char *wa = xasprintf("%s.args", in->what);
    /* Kubernetes: command replaces the entrypoint and drops the image's cmd;
     * args alone replaces the cmd. */
    json_t *parts[2] = {NULL, NULL};
    bool expandable[2] = {true, true};
    if (cmd) {
        if ((r = strv_json(&parts[0], cmd, wc, err)) < 0)
            goto out;
    } else {
        parts[0] = json_array();
        expandable[0] = false;
        for (char **e = cfg ? cfg->entrypoint : NULL; e && *e; e++)
            json_array_append_new(parts[0], json_string(*e));
    }
    if (args) {
        if ((r = strv_json(&parts[1], args, wa, err)) < 0)
            goto out;
    } else {
        parts[1] = json_array();
        expandable[1] = false;
        if (!cmd)
            for (char **e = cfg ? cfg->cmd : NULL; e && *e; e++)
                json_array_append_new(parts[1], json_string(*e));
    }
    for (int p = 0; p < 2; p++) {
        size_t i;
        json_t *v;
        json_array_foreach(parts[p], i, v)
        {
            if (!expandable[p]) {
                json_array_append(argv, v);
                continue;
            }
            char *x = NULL;
            if ((r = expand(&x, json_string_value(v), kenv, p ? wa : wc, err)) < 0)
                goto out;
            json_array_append_new(argv, json_string(x));
            free(x);
        }
    }
    if (json_array_size(argv) == 0) {
        r = err_set(err, -EINVAL,
                    "%s: no command: neither the YAML nor the image gives one (set "
                    "command or args%s)",
                    in->what, in->image ? "" : ", or give the image with --image");
        goto out;
    }
out:
    json_decref(parts[0]);
    json_decref(parts[1]);
    if (r < 0) {
        json_decref(argv);
        return r;
    }
    *out = argv;
    return 0;
}

static int parse_id(uint32_t *out, const char *s)
{
    if (!*s || strlen(s) > 10)
        return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -1;
    unsigned long long v = strtoull(s, NULL, 10);
    if (v > UINT32_MAX - 1)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int sc_id(int64_t *out, const json_t *sc, const char *key, const char *what,
                 cista_error **err)
{
    json_t *v = json_is_object(sc) ? json_object_get(sc, key) : NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX - 1)
        return err_set(err, -EINVAL, "%s.%s must be an id (0..4294967294)", what, key);
    *out = json_integer_value(v);
    return 1;
}

static int build_user(gen *g, json_t **out, const ctr_in *in, const img_config *cfg)
{
    cista_error **err = g->err;
    const json_t *psc = jobj(in->pod_spec, "securityContext");
    const json_t *csc = jobj(in->ctr, "securityContext");
    int64_t uid = -1, gid = -1;
    int r;
    _cleanup_free_ char *wp = xasprintf("%s: pod securityContext", in->what);
    _cleanup_free_ char *wcs = xasprintf("%s.securityContext", in->what);
    if ((r = sc_id(&uid, psc, "runAsUser", wp, err)) < 0 ||
        (r = sc_id(&uid, csc, "runAsUser", wcs, err)) < 0 ||
        (r = sc_id(&gid, psc, "runAsGroup", wp, err)) < 0 ||
        (r = sc_id(&gid, csc, "runAsGroup", wcs, err)) < 0)
        return r;
    if (cfg && cfg->user && *cfg->user && (uid < 0 || gid < 0)) {
        _cleanup_free_ char *u = xstrdup(cfg->user);
        char *colon = strchr(u, ':');
        if (colon)
            *colon++ = '\0';
        uint32_t v;
        if (uid < 0) {
            if (parse_id(&v, u) < 0)
                return err_set(err, -EINVAL,
                               "%s: the image runs as user \"%s\", a name cista cannot resolve "
                               "without reading the image's /etc/passwd; set "
                               "securityContext.runAsUser (and runAsGroup) to the numeric ids",
                               in->what, cfg->user);
            uid = v;
        }
        if (gid < 0 && colon) {
            if (parse_id(&v, colon) < 0)
                return err_set(err, -EINVAL,
                               "%s: the image's group \"%s\" is a name; set "
                               "securityContext.runAsGroup",
                               in->what, colon);
            gid = v;
        }
    }
    json_t *gids = json_array();
    int64_t fs = -1;
    if ((r = sc_id(&fs, psc, "fsGroup", wp, err)) < 0) {
        json_decref(gids);
        return r;
    }
    if (fs >= 0)
        json_array_append_new(gids, json_integer(fs));
    size_t i;
    json_t *sg;
    json_array_foreach(jarr(psc, "supplementalGroups"), i, sg)
    {
        if (!json_is_integer(sg) || json_integer_value(sg) < 0 ||
            json_integer_value(sg) > UINT32_MAX - 1) {
            json_decref(gids);
            return err_set(err, -EINVAL, "%s.supplementalGroups[%zu] must be an id", wp, i);
        }
        json_array_append(gids, sg);
    }
    *out = json_pack("{s:I,s:I,s:o}", "uid", (json_int_t)(uid < 0 ? 0 : uid), "gid",
                     (json_int_t)(gid < 0 ? 0 : gid), "additional_gids", sorted_unique(gids));
    return 0;
}

static json_t *mount_rule(const char *dest, const char *type, json_t *source, const char *opts,
                          bool ro)
{
    json_t *o = json_array();
    if (opts && *opts) {
        _cleanup_free_ char *copy = xstrdup(opts);
        char *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            json_array_append_new(o, json_string(t));
    }
    return json_pack("{s:s,s:s,s:o,s:o,s:b}", "destination", dest, "type", type, "source", source,
                     "options", o, "read_only", ro);
}

static void runtime_mounts(json_t *m)
{
    /* The OCI runtime-spec defaults (runc spec, containerd, podman). */
    json_array_append_new(m, mount_rule("/proc", "proc", match_exact("proc"), "", false));
    json_array_append_new(
        m, mount_rule("/dev", "tmpfs", match_exact("tmpfs"), "mode=755,size=65536k", false));
    json_array_append_new(m, mount_rule("/dev/pts", "devpts", match_exact("devpts"),
                                        "newinstance,ptmxmode=0666,mode=0620,gid=5", false));
    json_array_append_new(
        m, mount_rule("/dev/shm", "tmpfs", match_exact("shm"), "mode=1777,size=65536k", false));
    json_array_append_new(m, mount_rule("/dev/mqueue", "mqueue", match_exact("mqueue"), "", false));
    json_array_append_new(m, mount_rule("/sys", "sysfs", match_exact("sysfs"), "", true));
    json_array_append_new(m,
                          mount_rule("/sys/fs/cgroup", "cgroup", match_exact("cgroup"), "", true));
    json_array_append_new(
        m, mount_rule("/sys/fs/cgroup", "cgroup2", match_exact("cgroup2"), "", true));
    /* Name resolution files: the host controls DNS anyway, their content is not trusted. */
    json_array_append_new(m,
                          mount_rule("/etc/resolv.conf", "bind", match_regex("^/.+/resolv\\.conf$"),
                                     "rbind,bind,rw", false));
    json_array_append_new(m, mount_rule("/etc/hosts", "bind", match_regex("^/.+/(etc-)?hosts$"),
                                        "rbind,bind,rw", false));
    json_array_append_new(m, mount_rule("/etc/hostname", "bind", match_regex("^/.+/hostname$"),
                                        "rbind,bind,rw", false));
    /* No rule for containerd's /dev/shm bind from the CRI sandbox: the agent always mounts its
     * own tmpfs there (a host directory at /dev/shm would let the host read and write what the
     * workload keeps in shared memory), so the host's is dropped, never judged. */
}

static const char *volume_kind(const json_t *vol)
{
    static const struct {
        const char *key, *dir;
    } kinds[] = {
        {"secret", "secret"},       {"configMap", "configmap"},      {"emptyDir", "empty-dir"},
        {"projected", "projected"}, {"downwardAPI", "downward-api"},
    };
    for (size_t i = 0; i < ARRAY_LEN(kinds); i++)
        if (json_object_get(vol, kinds[i].key))
            return kinds[i].dir;
    return NULL;
}

static int build_mounts(gen *g, json_t **out, const ctr_in *in)
{
    cista_error **err = g->err;
    json_t *m = json_array();
    runtime_mounts(m);
    int r = 0;
    if (!in->pod_spec) {
        *out = m;
        return 0;
    }
    _cleanup_free_ char *cname = ere_escape(in->name);
    const char *tpath = jstr(in->ctr, "terminationMessagePath");
    _cleanup_free_ char *tdest = pol_path_normalize(tpath ? tpath : "/dev/termination-log");
    if (!tdest) {
        json_decref(m);
        return err_set(err, -EINVAL,
                       "%s.terminationMessagePath \"%s\" is not a clean absolute path", in->what,
                       tpath);
    }
    _cleanup_free_ char *tsrc = xasprintf(KUBELET_POD "/containers/%s/[0-9a-f]{8}$", cname);
    json_array_append_new(m, mount_rule(tdest, "bind", match_regex(tsrc), "rbind,bind,rw", false));
    if (!json_is_false(json_object_get(in->pod_spec, "automountServiceAccountToken")))
        json_array_append_new(
            m, mount_rule(
                   "/var/run/secrets/kubernetes.io/serviceaccount", "bind",
                   match_regex(KUBELET_POD
                               "/volumes/kubernetes\\.io~projected/kube-api-access-[0-9a-z]{5}$"),
                   "rbind,bind", true));
    size_t i;
    json_t *vm;
    json_array_foreach(jarr(in->ctr, "volumeMounts"), i, vm)
    {
        _cleanup_free_ char *w = xasprintf("%s.volumeMounts[%zu]", in->what, i);
        const char *name = jstr(vm, "name");
        const char *path = jstr(vm, "mountPath");
        if (!name || !path) {
            r = err_set(err, -EINVAL, "%s: needs name and mountPath", w);
            goto fail;
        }
        _cleanup_free_ char *dest = pol_path_normalize(path);
        if (!dest) {
            r = err_set(err, -EINVAL, "%s: mountPath \"%s\" is not an absolute path without \"..\"",
                        w, path);
            goto fail;
        }
        const json_t *vol = NULL;
        size_t j;
        json_t *v;
        json_array_foreach(jarr(in->pod_spec, "volumes"), j, v)
        {
            if (jstr(v, "name") && strcmp(jstr(v, "name"), name) == 0)
                vol = v;
        }
        json_array_foreach(in->claims, j, v)
        {
            const char *cn = jstr(jobj(v, "metadata"), "name");
            if (!vol && cn && strcmp(cn, name) == 0)
                vol = v;
        }
        if (!vol) {
            r = err_set(err, -EINVAL, "%s: no volume named \"%s\" in the pod spec", w, name);
            goto fail;
        }
        bool ro = json_is_true(json_object_get(vm, "readOnly"));
        const char *prop = jstr(vm, "mountPropagation");
        const char *popt = "";
        if (prop && strcmp(prop, "Bidirectional") == 0)
            popt = ",rshared";
        else if (prop && strcmp(prop, "HostToContainer") == 0)
            popt = ",rslave";
        _cleanup_free_ char *opts = xasprintf("rbind,bind,%s%s", ro ? "ro" : "rw", popt);
        _cleanup_free_ char *vname = ere_escape(name);
        json_t *src;
        const char *sub = jstr(vm, "subPath");
        const char *kind = volume_kind(vol);
        json_t *hp = jobj(vol, "hostPath");
        if (sub && *sub) {
            _cleanup_free_ char *re =
                xasprintf(KUBELET_POD "/volume-subpaths/%s/%s/[0-9]+$", vname, cname);
            src = match_regex(re);
        } else if (hp) {
            _cleanup_free_ char *hpn =
                jstr(hp, "path") ? pol_path_normalize(jstr(hp, "path")) : NULL;
            if (!hpn) {
                r = err_set(err, -EINVAL, "%s: hostPath of volume \"%s\" is not a clean path", w,
                            name);
                goto fail;
            }
            src = match_exact(hpn);
        } else if (kind) {
            _cleanup_free_ char *re =
                xasprintf(KUBELET_POD "/volumes/kubernetes\\.io~%s/%s$", kind, vname);
            src = match_regex(re);
        } else {
            /* persistentVolumeClaim, csi, ...: the plugin picks the directory. */
            _cleanup_free_ char *re =
                xasprintf(KUBELET_POD "/volumes/kubernetes\\.io~[a-z0-9-]+/[^/]+(/mount)?$");
            src = match_regex(re);
        }
        json_array_append_new(m, mount_rule(dest, "bind", src, opts, ro));
    }
    *out = m;
    return 0;
fail:
    json_decref(m);
    return r;
}

static int cap_name(char **out, const json_t *v, const char *what, cista_error **err)
{
    if (!json_is_string(v))
        return err_set(err, -EINVAL, "%s must be a string", what);
    const char *s = json_string_value(v);
    if (!strncasecmp(s, "CAP_", 4))
        s += 4;
    if (!*s || strlen(s) > 32)
        return err_set(err, -EINVAL, "%s: \"%s\" is not a capability", what, json_string_value(v));
    char *c = xasprintf("CAP_%s", s);
    for (char *p = c; *p; p++) {
        *p = (char)toupper((unsigned char)*p);
        if (!isalnum((unsigned char)*p) && *p != '_') {
            free(c);
            return err_set(err, -EINVAL, "%s: \"%s\" is not a capability", what,
                           json_string_value(v));
        }
    }
    *out = c;
    return 0;
}

static int build_caps(gen *g, json_t **out, const ctr_in *in)
{
    cista_error **err = g->err;
    json_t *set = json_array();
    for (size_t i = 0; i < ARRAY_LEN(default_caps); i++)
        json_array_append_new(set, json_string(default_caps[i]));
    const json_t *caps = jobj(jobj(in->ctr, "securityContext"), "capabilities");
    size_t i;
    json_t *v;
    json_array_foreach(jarr(caps, "drop"), i, v)
    {
        if (json_is_string(v) && !strcasecmp(json_string_value(v), "ALL")) {
            json_array_clear(set);
            continue;
        }
        char *c = NULL;
        _cleanup_free_ char *w =
            xasprintf("%s.securityContext.capabilities.drop[%zu]", in->what, i);
        int r = cap_name(&c, v, w, err);
        if (r < 0) {
            json_decref(set);
            return r;
        }
        for (size_t k = json_array_size(set); k-- > 0;)
            if (!strcmp(json_string_value(json_array_get(set, k)), c))
                json_array_remove(set, k);
        free(c);
    }
    json_array_foreach(jarr(caps, "add"), i, v)
    {
        _cleanup_free_ char *w = xasprintf("%s.securityContext.capabilities.add[%zu]", in->what, i);
        if (json_is_string(v) && !strcasecmp(json_string_value(v), "ALL")) {
            json_decref(set);
            return err_set(err, -EPERM,
                           "%s: adding ALL capabilities amounts to a privileged container, which "
                           "cista refuses; list the capabilities needed",
                           w);
        }
        char *c = NULL;
        int r = cap_name(&c, v, w, err);
        if (r < 0) {
            json_decref(set);
            return r;
        }
        json_array_append_new(set, json_string(c));
        free(c);
    }
    set = sorted_unique(set);
    *out = json_pack("{s:O,s:O,s:O,s:[],s:[]}", "bounding", set, "effective", set, "permitted", set,
                     "inheritable", "ambient");
    json_decref(set);
    return 0;
}

static int build_exec(gen *g, json_t **out, const ctr_in *in)
{
    json_t *ex = json_array();
    for (size_t i = 0; i < g->opts->exec_count; i++) {
        json_t *cmd = json_array();
        for (const char *const *a = g->opts->exec[i]; *a; a++)
            json_array_append_new(cmd, json_string(*a));
        json_array_append_new(ex, cmd);
    }
    /* exec probes run through the same path as `kubectl exec` (genpolicy does the same). */
    static const char *const probes[] = {"livenessProbe", "readinessProbe", "startupProbe"};
    for (size_t p = 0; p < ARRAY_LEN(probes); p++) {
        json_t *c = json_object_get(jobj(jobj(in->ctr, probes[p]), "exec"), "command");
        if (!c)
            continue;
        json_t *cmd;
        _cleanup_free_ char *w = xasprintf("%s.%s.exec.command", in->what, probes[p]);
        int r = strv_json(&cmd, c, w, g->err);
        if (r < 0) {
            json_decref(ex);
            return r;
        }
        if (json_array_size(cmd))
            json_array_append_new(ex, cmd);
        else
            json_decref(cmd);
    }
    *out = sorted_unique(ex);
    return 0;
}

static int build_container(gen *g, const ctr_in *in)
{
    cista_error **err = g->err;
    const img_config *cfg = in->image ? img_get_config(in->image->img) : NULL;
    const json_t *csc = jobj(in->ctr, "securityContext");
    int r;
    if (json_is_true(json_object_get(csc, "privileged")))
        return err_set(err, -EPERM,
                       "%s: privileged containers see every host device and can undo the TEE's "
                       "isolation; cista refuses them (drop securityContext.privileged)",
                       in->what);
    if ((r = want(csc, "readOnlyRootFilesystem", JSON_TRUE, in->what, err)) < 0 ||
        (r = want(csc, "allowPrivilegeEscalation", JSON_TRUE, in->what, err)) < 0 ||
        (r = want(in->ctr, "env", JSON_ARRAY, in->what, err)) < 0 ||
        (r = want(in->ctr, "envFrom", JSON_ARRAY, in->what, err)) < 0 ||
        (r = want(in->ctr, "volumeMounts", JSON_ARRAY, in->what, err)) < 0)
        return r;

    env_list kenv = {0};
    json_t *env = NULL, *args = NULL, *user = NULL, *mounts = NULL, *caps = NULL, *ex = NULL;
    r = build_env(g, &env, &kenv, in, cfg);
    if (r == 0)
        r = build_args(g, &args, in, cfg, &kenv);
    env_clear(&kenv);
    if (r == 0)
        r = build_user(g, &user, in, cfg);
    if (r == 0)
        r = build_mounts(g, &mounts, in);
    if (r == 0)
        r = build_caps(g, &caps, in);
    if (r == 0)
        r = build_exec(g, &ex, in);
    if (r < 0) {
        json_decref(env);
        json_decref(args);
        json_decref(user);
        json_decref(mounts);
        json_decref(caps);
        json_decref(ex);
        return r;
    }
    const char *wd = jstr(in->ctr, "workingDir");
    if (!wd || !*wd)
        wd = cfg && cfg->working_dir && *cfg->working_dir ? cfg->working_dir : "/";
    _cleanup_free_ char *cwd = pol_path_normalize(wd);
    bool nnp = json_is_false(json_object_get(csc, "allowPrivilegeEscalation"));
    json_t *process = json_pack("{s:o,s:o,s:s,s:o,s:b}", "args", args, "env", env, "cwd",
                                cwd ? cwd : "/", "user", user, "no_new_privileges", nnp);
    if (!cwd) {
        json_decref(process);
        json_decref(mounts);
        json_decref(caps);
        json_decref(ex);
        return err_set(err, -EINVAL, "%s: working directory \"%s\" is not a clean absolute path",
                       in->what, wd);
    }

    json_t *sysctls = json_object();
    size_t i;
    json_t *s;
    json_array_foreach(jarr(jobj(in->pod_spec, "securityContext"), "sysctls"), i, s)
    {
        const char *n = jstr(s, "name");
        json_t *v = json_object_get(s, "value");
        if (!n || !v || !(json_is_string(v) || json_is_integer(v))) {
            json_decref(sysctls);
            json_decref(process);
            json_decref(mounts);
            json_decref(caps);
            json_decref(ex);
            return err_set(err, -EINVAL,
                           "%s: pod securityContext.sysctls[%zu] needs name and value", in->what,
                           i);
        }
        json_object_set_new(sysctls, n,
                            json_is_string(v)
                                ? json_copy(v)
                                : json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v)));
    }

    json_t *secrets = json_array(), *volumes = json_array();
    for (size_t k = 0; k < g->opts->secret_count; k++) {
        const pol_gen_secret *sec = &g->opts->secrets[k];
        if (strcmp(sec->container, in->name) != 0)
            continue;
        json_t *o = json_pack("{s:s}", "resource", sec->resource);
        if (sec->path)
            json_object_set_new(o, "path", json_string(sec->path));
        if (sec->env)
            json_object_set_new(o, "env", json_string(sec->env));
        json_array_append_new(secrets, o);
    }
    for (size_t k = 0; k < g->opts->volume_count; k++) {
        const pol_gen_volume *v = &g->opts->volumes[k];
        if (strcmp(v->container, in->name) != 0)
            continue;
        /* the rollback mode is written out even when it is the default: the policy says it */
        const char *rollback = v->rollback ? v->rollback : v->anchor ? "strict" : "off";
        json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "name", v->name, "mount_point", v->mount_point,
                              "key", v->key ? v->key : "", "rollback", rollback);
        if (v->anchor)
            json_object_set_new(o, "anchor", json_string(v->anchor));
        json_array_append_new(volumes, o);
    }

    /*
     * The kubelet and podman stop a container with its image's StopSignal (nginx: SIGQUIT, a
     * graceful stop), then SIGKILL after the grace period: without it in the policy every stop
     * of such an image would be refused and end in SIGKILL.
     */
    json_t *signals = json_pack("[ii]", SIGKILL, SIGTERM);
    const img_config *icfg = in->image ? img_get_config(in->image->img) : NULL;
    int stop = icfg && icfg->stop_signal ? util_signal_parse(icfg->stop_signal) : -1;
    if (stop > 0 && stop != SIGKILL && stop != SIGTERM)
        json_array_append_new(signals, json_integer(stop));
    else if (icfg && icfg->stop_signal && stop < 0)
        log_warn("image of container %s: StopSignal \"%s\" is not a signal; only SIGTERM and "
                 "SIGKILL are allowed",
                 in->name, icfg->stop_signal);
    json_t *c =
        json_pack("{s:s,s:o,s:o,s:o,s:o,s:b,s:o,s:o,s:o,s:b,s:o,s:[]}", "name", in->name, "process",
                  process, "mounts", mounts, "capabilities", caps, "sysctls", sysctls,
                  "read_only_rootfs", json_is_true(json_object_get(csc, "readOnlyRootFilesystem")),
                  "secrets", sorted_unique(secrets), "volumes", sorted_unique(volumes), "exec", ex,
                  "logs", !g->opts->deny_logs, "signals", signals, "copy");
    if (in->image)
        json_object_set_new(c, "image", image_rule(in->image));
    json_array_append_new(g->containers, c);
    return 0;
}

/* ---- workloads ---- */

/* The pod template of a workload document: spec and metadata (borrowed). */
static bool pod_template(json_t *doc, json_t **spec, json_t **meta)
{
    const char *kind = jstr(doc, "kind");
    if (!kind)
        return false;
    json_t *tmpl = NULL;
    if (!strcmp(kind, "Pod")) {
        tmpl = doc;
    } else if (!strcmp(kind, "Deployment") || !strcmp(kind, "StatefulSet") ||
               !strcmp(kind, "DaemonSet") || !strcmp(kind, "Job") || !strcmp(kind, "ReplicaSet") ||
               !strcmp(kind, "ReplicationController")) {
        tmpl = jobj(jobj(doc, "spec"), "template");
    } else if (!strcmp(kind, "CronJob")) {
        tmpl = jobj(jobj(jobj(jobj(doc, "spec"), "jobTemplate"), "spec"), "template");
    } else {
        return false;
    }
    *spec = jobj(tmpl, "spec");
    *meta = tmpl;
    return *spec != NULL;
}

static bool name_taken(gen *g, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(g->containers, i, c)
    {
        if (!strcmp(jstr(c, "name"), name))
            return true;
    }
    return false;
}

static int gen_workload(gen *g, json_t *doc, size_t index)
{
    cista_error **err = g->err;
    json_t *spec, *meta;
    if (!pod_template(doc, &spec, &meta))
        return 0;
    const char *wname = jstr(jobj(doc, "metadata"), "name");
    _cleanup_free_ char *what =
        xasprintf("document %zu (%s \"%s\")", index + 1, jstr(doc, "kind"), wname ? wname : "?");
    int r;
    if ((r = want(spec, "containers", JSON_ARRAY, what, err)) < 0 ||
        (r = want(spec, "initContainers", JSON_ARRAY, what, err)) < 0 ||
        (r = want(spec, "volumes", JSON_ARRAY, what, err)) < 0)
        return r;
    if (json_is_true(json_object_get(spec, "hostPID")) ||
        json_is_true(json_object_get(spec, "hostIPC")))
        return err_set(err, -EPERM,
                       "%s: hostPID/hostIPC share the host's process or IPC namespace with the "
                       "TEE, which cista refuses",
                       what);
    static const char *const lists[] = {"initContainers", "containers"};
    for (size_t l = 0; l < 2; l++) {
        size_t i;
        json_t *c;
        json_array_foreach(jarr(spec, lists[l]), i, c)
        {
            const char *name = jstr(c, "name");
            _cleanup_free_ char *w = xasprintf("%s: %s[%zu]", what, lists[l], i);
            if (!name || !*name)
                return err_set(err, -EINVAL, "%s: needs a name", w);
            if (name_taken(g, name))
                return err_set(err, -EINVAL,
                               "%s: container name \"%s\" is used twice in the stream; a policy "
                               "names containers uniquely, so generate one policy per workload",
                               w, name);
            const char *image = jstr(c, "image");
            if (!image || !*image)
                return err_set(err, -EINVAL, "%s: needs an image", w);
            gen_image *gi = NULL;
            if ((r = find_image(&gi, g, image, w)) < 0)
                return r;
            ctr_in in = {spec, c, name, gi, w, jarr(jobj(doc, "spec"), "volumeClaimTemplates")};
            if ((r = build_container(g, &in)) < 0)
                return r;
        }
    }
    return 0;
}

static char *image_container_name(const char *ref, size_t index)
{
    img_ref r;
    cista_error *e = NULL;
    char *base = NULL;
    if (img_ref_parse(&r, ref, &e) == 0) {
        base = ref_base(r.path);
        img_ref_clear(&r);
    }
    err_free(e);
    cbuf b = CBUF_INIT;
    for (const char *p = base ? base : ""; *p; p++) {
        char c = (char)tolower((unsigned char)*p);
        buf_put(&b, isalnum((unsigned char)c) ? &c : "-", 1);
    }
    free(base);
    if (b.size == 0)
        buf_printf(&b, "container-%zu", index + 1);
    buf_put(&b, "", 0);
    return (char *)buf_steal(&b, NULL);
}

static int annotate(gen *g, const char *canonical, size_t size, char **out_yaml)
{
    uint8_t h[POL_HASH_SIZE];
    pol_hash(h, canonical, size);
    _cleanup_free_ char *hex = hex_encode(h, sizeof(h));
    _cleanup_free_ char *b64 = b64_encode(canonical, size);
    size_t i;
    json_t *doc;
    json_array_foreach(g->docs, i, doc)
    {
        json_t *spec, *meta;
        if (!pod_template(doc, &spec, &meta))
            continue;
        json_object_set_new(spec, "runtimeClassName", json_string("cista"));
        json_t *md = jobj(meta, "metadata");
        if (!md) {
            md = json_object();
            json_object_set_new(meta, "metadata", md);
        }
        json_t *ann = jobj(md, "annotations");
        if (!ann) {
            ann = json_object();
            json_object_set_new(md, "annotations", ann);
        }
        json_object_set_new(ann, "io.cista.policy", json_string(b64));
        json_object_set_new(ann, "io.cista.policy-hash", json_string(hex));
    }
    return pol__yaml_emit(out_yaml, g->docs, g->err);
}

static int parse_images(gen *g)
{
    g->images = xzalloc((g->opts->image_count + 1) * sizeof(*g->images));
    for (size_t i = 0; i < g->opts->image_count; i++) {
        const char *s = g->opts->images[i];
        const char *eq = strchr(s, '=');
        gen_image *gi = &g->images[g->images_len++];
        if (eq && eq > s && is_transport(eq + 1)) {
            gi->spec = xstrndup(s, (size_t)(eq - s));
            gi->ref = eq + 1;
        } else {
            gi->ref = s;
        }
    }
    return 0;
}

static int check_targets(gen *g)
{
    for (size_t i = 0; i < g->opts->secret_count; i++)
        if (!name_taken(g, g->opts->secrets[i].container))
            return err_set(g->err, -EINVAL, "secret %s: no container \"%s\" in the policy",
                           g->opts->secrets[i].resource, g->opts->secrets[i].container);
    for (size_t i = 0; i < g->opts->volume_count; i++) {
        const pol_gen_volume *v = &g->opts->volumes[i];
        if (!name_taken(g, v->container))
            return err_set(g->err, -EINVAL, "volume %s: no container \"%s\" in the policy", v->name,
                           v->container);
        /* the user's mistakes get the user's words, not "generated policy does not validate" */
        _cleanup_free_ char *what = xasprintf("volume %s of container %s", v->name, v->container);
        const char *rollback = v->rollback;
        int r = pol__volume_check(what, v->name, v->key, v->anchor, &rollback, g->err);
        if (r < 0)
            return r;
        _cleanup_free_ char *n = pol_path_normalize(v->mount_point);
        if (!n || strcmp(n, v->mount_point) || !strcmp(n, "/"))
            return err_set(g->err, -EINVAL,
                           "%s: mount point \"%s\" is not a normalised absolute path below /", what,
                           v->mount_point);
    }
    return 0;
}

int pol_gen(json_t **out, char **out_yaml, const pol_gen_opts *opts, cista_error **err)
{
    gen g = {.opts = opts, .err = err};
    g.containers = json_array();
    int r = parse_images(&g);
    if (r == 0 && opts->pod_yaml) {
        r = pol__yaml_load(&g.docs, opts->pod_yaml, opts->pod_yaml_size, err);
        if (r < 0)
            err_wrap(err, "pod YAML");
        size_t i;
        json_t *d;
        if (r == 0) {
            json_array_foreach(g.docs, i, d)
            {
                if ((r = gen_workload(&g, d, i)) < 0)
                    break;
            }
        }
        if (r == 0 && json_array_size(g.containers) == 0)
            r = err_set(err, -EINVAL,
                        "pod YAML: no Pod, Deployment, StatefulSet, DaemonSet, Job, ReplicaSet "
                        "or CronJob with containers found");
    } else if (r == 0) {
        if (opts->image_count == 0)
            r = err_set(err, -EINVAL, "usage: give at least one --image or a --pod YAML");
        for (size_t i = 0; r == 0 && i < g.images_len; i++) {
            _cleanup_free_ char *name = image_container_name(g.images[i].ref, i);
            for (int n = 2; name_taken(&g, name); n++) {
                _cleanup_free_ char *base = image_container_name(g.images[i].ref, i);
                free(name);
                name = xasprintf("%s-%d", base, n);
            }
            _cleanup_free_ char *what = xasprintf("image %s", g.images[i].ref);
            if ((r = open_image(&g.images[i], err)) < 0)
                break;
            ctr_in in = {NULL, NULL, name, &g.images[i], what, NULL};
            r = build_container(&g, &in);
        }
    }
    if (r == 0)
        r = check_targets(&g);
    json_t *doc = NULL;
    if (r == 0) {
        doc = json_pack("{s:s,s:O}", "version", POL_VERSION, "containers", g.containers);
        if (opts->kbs_url) {
            json_t *k = json_pack("{s:s}", "url", opts->kbs_url);
            if (opts->kbs_ca)
                json_object_set_new(k, "ca", json_string(opts->kbs_ca));
            json_object_set_new(doc, "kbs", k);
        }
        /* Whatever we write must be a policy we would accept. */
        size_t size;
        _cleanup_free_ char *canon = pol_canonical(doc, &size);
        pol_policy *check = NULL;
        r = pol_parse(&check, canon, size, err);
        pol_free(check);
        if (r < 0)
            err_wrap(err, "generated policy does not validate (a bug)");
        if (r == 0 && out_yaml && g.docs)
            r = annotate(&g, canon, size, out_yaml);
    }
    for (size_t i = 0; i < g.images_len; i++) {
        img_free(g.images[i].img);
        free(g.images[i].spec);
    }
    free(g.images);
    json_decref(g.containers);
    json_decref(g.docs);
    if (r < 0) {
        json_decref(doc);
        return r;
    }
    *out = doc;
    return 0;
}
