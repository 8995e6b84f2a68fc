/*
 * manifest.c - parsing of the untrusted JSON documents of an image: the
 * layout's index.json (and nested indexes), manifests, configs and the
 * manifest.json of a `docker save` archive; media types and digests.
 *
 * Every function here works on bytes in memory, so the fuzz target
 * (fuzz/fuzz_manifest.c) reaches all of it without a filesystem.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/img_int.h"
#include "util/buf.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

/* Vectors (Env, Cmd, ExposedPorts, RepoTags) longer than this are hostile. */
#define STRV_MAX 65536

static char *escape(const char *s, bool quote)
{
    if (!s)
        return xstrdup("(null)");
    cbuf b = CBUF_INIT;
    if (quote)
        buf_puts(&b, "\"");
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
        if (n == 80) {
            buf_puts(&b, "...");
            break;
        }
        /* Terminal escapes in an attacker's media type must not reach the user's tty. */
        if (*p < 0x20 || *p == 0x7f || (quote && (*p == '"' || *p == '\\')))
            buf_printf(&b, "\\x%02x", *p);
        else
            buf_put(&b, p, 1);
    }
    if (quote)
        buf_puts(&b, "\"");
    return (char *)buf_steal(&b, NULL);
}

char *img__quote(const char *s)
{
    return escape(s, true);
}

char *img__printable(const char *s)
{
    return escape(s, false);
}

bool img__digest_valid(const char *s)
{
    if (!s || strncmp(s, "sha256:", 7) != 0)
        return false;
    for (size_t i = 7; i < 7 + 64; i++) {
        char c = s[i];
        /* Lowercase only: the digest becomes a file name and must be canonical. */
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return s[7 + 64] == '\0';
}

int img__digest_check(const char *s, const char *what, cista_error **err)
{
    if (img__digest_valid(s))
        return 0;
    _cleanup_free_ char *q = img__quote(s);
    const char *colon = s ? strchr(s, ':') : NULL;
    if (colon && strncmp(s, "sha256:", 7) != 0)
        return err_set(err, -EINVAL,
                       "%s: digest %s uses an algorithm other than sha256; cista accepts only "
                       "sha256 digests",
                       what, q);
    return err_set(err, -EINVAL,
                   "%s: digest %s is malformed: expected \"sha256:\" and 64 lowercase hex digits",
                   what, q);
}

void img__sha256_digest(char out[IMG_DIGEST_MAX], const uint8_t raw[32])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < 32; i++) {
        out[7 + 2 * i] = hex[raw[i] >> 4];
        out[8 + 2 * i] = hex[raw[i] & 15];
    }
    out[71] = '\0';
}

/* ---- media types ---- */

bool img__is_index_type(const char *mt)
{
    return mt && (!strcmp(mt, IMG_MT_OCI_INDEX) || !strcmp(mt, IMG_MT_DOCKER_LIST));
}

bool img__is_manifest_type(const char *mt)
{
    return mt && (!strcmp(mt, IMG_MT_OCI_MANIFEST) || !strcmp(mt, IMG_MT_DOCKER_MANIFEST));
}

static const struct {
    const char *type;
    img_compression comp;
} layer_types[] = {
    {"application/vnd.oci.image.layer.v1.tar", IMG_COMP_NONE},
    {"application/vnd.oci.image.layer.v1.tar+gzip", IMG_COMP_GZIP},
    {"application/vnd.oci.image.layer.v1.tar+zstd", IMG_COMP_ZSTD},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar", IMG_COMP_NONE},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", IMG_COMP_GZIP},
    {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", IMG_COMP_ZSTD},
    /* Docker schema 2; the plain-tar and zstd ones are what containers/image writes. */
    {"application/vnd.docker.image.rootfs.diff.tar", IMG_COMP_NONE},
    {"application/vnd.docker.image.rootfs.diff.tar.gzip", IMG_COMP_GZIP},
    {"application/vnd.docker.image.rootfs.diff.tar.zstd", IMG_COMP_ZSTD},
    {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", IMG_COMP_GZIP},
};

int img__layer_type(img_compression *comp, bool *encrypted, const char *media_type,
                    cista_error **err)
{
    *comp = IMG_COMP_UNKNOWN;
    *encrypted = false;
    if (!media_type)
        return err_set(err, -EINVAL, "layer has no media type");
    size_t n = strlen(media_type);
    size_t sl = strlen(IMG_ENCRYPTED_SUFFIX);
    if (n > sl && !strcmp(media_type + n - sl, IMG_ENCRYPTED_SUFFIX)) {
        *encrypted = true;
        n -= sl;
    }
    for (size_t i = 0; i < ARRAY_LEN(layer_types); i++) {
        if (strlen(layer_types[i].type) == n && !strncmp(layer_types[i].type, media_type, n)) {
            *comp = layer_types[i].comp;
            return 0;
        }
    }
    _cleanup_free_ char *q = img__quote(media_type);
    return err_set(err, -EINVAL,
                   "unknown layer media type %s; cista unpacks OCI and Docker tar, tar+gzip and "
                   "tar+zstd layers (each optionally +encrypted)",
                   q);
}

const char *img__oci_layer_type(img_compression comp, bool encrypted)
{
    switch (comp) {
    case IMG_COMP_NONE:
        return encrypted ? "application/vnd.oci.image.layer.v1.tar+encrypted"
                         : "application/vnd.oci.image.layer.v1.tar";
    case IMG_COMP_GZIP:
        return encrypted ? "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
                         : "application/vnd.oci.image.layer.v1.tar+gzip";
    case IMG_COMP_ZSTD:
        return encrypted ? "application/vnd.oci.image.layer.v1.tar+zstd+encrypted"
                         : "application/vnd.oci.image.layer.v1.tar+zstd";
    case IMG_COMP_UNKNOWN:
        break;
    }
    return NULL;
}

const char *img__compression_name(img_compression comp)
{
    switch (comp) {
    case IMG_COMP_NONE:
        return "none";
    case IMG_COMP_GZIP:
        return "gzip";
    case IMG_COMP_ZSTD:
        return "zstd";
    case IMG_COMP_UNKNOWN:
        break;
    }
    return "unknown";
}

const char *img__host_platform(void)
{
#if defined(__x86_64__)
    return "linux/amd64";
#elif defined(__aarch64__)
    return "linux/arm64";
#elif defined(__i386__)
    return "linux/386";
#elif defined(__arm__)
    return "linux/arm";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return "linux/ppc64le";
#elif defined(__s390x__)
    return "linux/s390x";
#elif defined(__riscv) && __riscv_xlen == 64
    return "linux/riscv64";
#else
    return "linux/amd64";
#endif
}

/* ---- small JSON helpers ---- */

static void strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

void img__strv_free(char **v)
{
    strv_free(v);
}

/* An array of strings (or null/absent: *out = NULL) into a NULL-terminated vector. */
static int strv_get(char ***out, size_t *out_len, const json_t *obj, const char *key,
                    const char *what, cista_error **err)
{
    json_t *a;
    *out = NULL;
    if (out_len)
        *out_len = 0;
    int r = js_get_array(&a, obj, key, false, what, err);
    if (r < 0 || !a)
        return r;
    size_t n = json_array_size(a);
    if (n > STRV_MAX)
        return err_set(err, -E2BIG, "%s: member \"%s\" has %zu entries, more than the limit of %d",
                       what, key, n, STRV_MAX);
    char **v = xzalloc((n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(a, i);
        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
            strv_free(v);
            return err_set(err, -EINVAL, "%s: %s[%zu] must be a string without NUL characters",
                           what, key, i);
        }
        v[i] = xstrdup(json_string_value(s));
    }
    *out = v;
    if (out_len)
        *out_len = n;
    return 0;
}

static int dup_string(char **out, const json_t *obj, const char *key, bool required,
                      const char *what, cista_error **err)
{
    const char *s;
    *out = NULL;
    int r = js_get_string(&s, obj, key, required, what, err);
    if (r < 0)
        return r;
    if (s)
        *out = xstrdup(s);
    return 0;
}

static int get_schema_version(const json_t *root, const char *what, cista_error **err)
{
    int64_t v;
    int r = js_get_int(&v, root, "schemaVersion", true, what, err);
    if (r < 0)
        return r;
    if (v != 2)
        return err_set(err, -EINVAL, "%s: schemaVersion is %lld; cista reads schemaVersion 2 only",
                       what, (long long)v);
    return 0;
}

/* ---- descriptors ---- */

void img__desc_clear(img_desc *d)
{
    if (!d)
        return;
    free(d->media_type);
    json_decref(d->annotations);
    free(d->ref_name);
    free(d->os);
    free(d->architecture);
    free(d->variant);
    memset(d, 0, sizeof(*d));
}

int img__desc_parse(img_desc *out, const json_t *obj, const char *what, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(obj))
        return err_set(err, -EINVAL, "%s: a descriptor must be a JSON object", what);
    const char *mt, *dg;
    int64_t size;
    json_t *ann, *plat;
    int r;
    if ((r = js_get_string(&mt, obj, "mediaType", true, what, err)) < 0 ||
        (r = js_get_string(&dg, obj, "digest", true, what, err)) < 0 ||
        (r = js_get_int(&size, obj, "size", true, what, err)) < 0 ||
        (r = js_get_object(&ann, obj, "annotations", false, what, err)) < 0 ||
        (r = js_get_object(&plat, obj, "platform", false, what, err)) < 0)
        return r;
    if ((r = img__digest_check(dg, what, err)) < 0)
        return r;
    if (size < 0)
        return err_set(err, -EINVAL, "%s: size %lld is negative", what, (long long)size);
    if (ann) {
        const char *k;
        json_t *v;
        json_object_foreach(ann, k, v)
        {
            if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
                _cleanup_free_ char *q = img__quote(k);
                return err_set(err, -EINVAL,
                               "%s: annotation %s must be a string without NUL characters", what,
                               q);
            }
        }
    }
    img_desc d = {0};
    d.media_type = xstrdup(mt);
    memcpy(d.digest, dg, IMG_DIGEST_MAX);
    d.size = (uint64_t)size;
    if (ann) {
        d.annotations = json_incref(ann);
        json_t *rn = json_object_get(ann, IMG_ANN_REF_NAME);
        if (rn)
            d.ref_name = xstrdup(json_string_value(rn));
    }
    if (plat) {
        if ((r = dup_string(&d.os, plat, "os", true, what, err)) < 0 ||
            (r = dup_string(&d.architecture, plat, "architecture", true, what, err)) < 0 ||
            (r = dup_string(&d.variant, plat, "variant", false, what, err)) < 0) {
            img__desc_clear(&d);
            return r;
        }
    }
    *out = d;
    return 0;
}

/* ---- index ---- */

void img__index_clear(img_index *idx)
{
    if (!idx)
        return;
    for (size_t i = 0; i < idx->len; i++)
        img__desc_clear(&idx->v[i]);
    free(idx->v);
    idx->v = NULL;
    idx->len = 0;
}

int img__index_parse(img_index *out, const void *data, size_t size, const char *what,
                     cista_error **err)
{
    out->v = NULL;
    out->len = 0;
    _cleanup_json_ json_t *root = NULL;
    int r = js_parse_object(&root, data, size, IMG_MAX_INDEX, what, err);
    if (r < 0)
        return r;
    if ((r = get_schema_version(root, what, err)) < 0)
        return r;
    const char *mt;
    if ((r = js_get_string(&mt, root, "mediaType", false, what, err)) < 0)
        return r;
    if (mt && !img__is_index_type(mt)) {
        _cleanup_free_ char *q = img__quote(mt);
        return err_set(err, -EINVAL, "%s: mediaType %s is not an image index", what, q);
    }
    json_t *arr;
    if ((r = js_get_array(&arr, root, "manifests", true, what, err)) < 0)
        return r;
    size_t n = json_array_size(arr);
    img_index idx = {xzalloc((n ? n : 1) * sizeof(img_desc)), 0};
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *w = xasprintf("%s: manifests[%zu]", what, i);
        r = img__desc_parse(&idx.v[i], json_array_get(arr, i), w, err);
        if (r < 0) {
            img__index_clear(&idx);
            return r;
        }
        idx.len++;
    }
    *out = idx;
    return 0;
}

static char *platform_str(const img_desc *d)
{
    if (!d->os)
        return xstrdup("(no platform)");
    return d->variant ? xasprintf("%s/%s/%s", d->os, d->architecture, d->variant)
                      : xasprintf("%s/%s", d->os, d->architecture);
}

/* Does entry @d run on "os/arch[/variant]"? */
static bool platform_matches(const img_desc *d, const char *want)
{
    if (!d->os || !d->architecture)
        return false;
    _cleanup_free_ char *w = xstrdup(want);
    char *arch = strchr(w, '/');
    if (!arch)
        return false;
    *arch++ = '\0';
    char *variant = strchr(arch, '/');
    if (variant)
        *variant++ = '\0';
    if (strcmp(d->os, w) != 0 || strcmp(d->architecture, arch) != 0)
        return false;
    if (!variant)
        return true;
    /* arm64 images often omit the default variant v8. */
    if (!d->variant)
        return !strcmp(arch, "arm64") && !strcmp(variant, "v8");
    return !strcmp(d->variant, variant);
}

static char *list_tags(const img_index *idx)
{
    cbuf b = CBUF_INIT;
    size_t shown = 0;
    for (size_t i = 0; i < idx->len; i++) {
        if (!idx->v[i].ref_name)
            continue;
        if (shown == 10) {
            buf_puts(&b, ", ...");
            break;
        }
        _cleanup_free_ char *q = img__quote(idx->v[i].ref_name);
        buf_printf(&b, "%s%s", shown++ ? ", " : "", q);
    }
    if (!shown)
        buf_puts(&b, "none");
    return (char *)buf_steal(&b, NULL);
}

int img__index_select(size_t *out, char **note, const img_index *idx, const char *tag,
                      const char *platform, const char *what, cista_error **err)
{
    *note = NULL;
    if (!platform)
        platform = img__host_platform();
    _cleanup_free_ size_t *cand = xmalloc((idx->len ? idx->len : 1) * sizeof(size_t));
    size_t n = 0;
    for (size_t i = 0; i < idx->len; i++) {
        if (!tag || (idx->v[i].ref_name && !strcmp(idx->v[i].ref_name, tag)))
            cand[n++] = i;
    }
    if (n == 0) {
        if (!tag)
            return err_set(err, -ENOENT, "%s lists no manifests", what);
        _cleanup_free_ char *tags = list_tags(idx);
        _cleanup_free_ char *q = img__quote(tag);
        return err_set(err, -ENOENT, "%s has no manifest tagged %s (tags: %s)", what, q, tags);
    }
    if (n == 1) {
        *out = cand[0];
        return 0;
    }
    /* Several candidates are fine only when they are the platforms of one image. */
    for (size_t i = 0; i < n; i++) {
        if (!idx->v[cand[i]].os) {
            _cleanup_free_ char *tags = list_tags(idx);
            if (!tag)
                return err_set(err, -EINVAL,
                               "%s lists %zu manifests; name one with :TAG (tags: %s)", what, n,
                               tags);
            _cleanup_free_ char *q = img__quote(tag);
            return err_set(err, -EINVAL,
                           "%s has %zu manifests tagged %s and not all of them name a platform; "
                           "cannot choose",
                           what, n, q);
        }
    }
    cbuf avail = CBUF_INIT;
    size_t pick = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *p = platform_str(&idx->v[cand[i]]);
        _cleanup_free_ char *q = img__quote(p);
        buf_printf(&avail, "%s%s", i ? ", " : "", q);
        if (pick == SIZE_MAX && platform_matches(&idx->v[cand[i]], platform))
            pick = cand[i];
    }
    _cleanup_free_ char *list = (char *)buf_steal(&avail, NULL);
    if (pick == SIZE_MAX)
        return err_set(err, -ENOENT, "%s has no manifest for platform %s (available: %s)", what,
                       platform, list);
    *out = pick;
    *note = xasprintf("picked platform %s from %zu manifests (%s)", platform, n, list);
    return 0;
}

/* ---- manifest ---- */

static void layer_clear(img_layer *l)
{
    free(l->media_type);
    free(l->enc_keys_jwe);
    free(l->enc_pubopts);
    json_decref(l->annotations);
    memset(l, 0, sizeof(*l));
}

void img__manifest_clear(img_manifest *m)
{
    if (!m)
        return;
    free(m->media_type);
    img__desc_clear(&m->config);
    for (size_t i = 0; i < m->layer_count; i++)
        layer_clear(&m->layers[i]);
    free(m->layers);
    json_decref(m->annotations);
    memset(m, 0, sizeof(*m));
}

int img__manifest_parse(img_manifest *out, const void *data, size_t size,
                        const char *desc_media_type, const char *what, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    _cleanup_json_ json_t *root = NULL;
    int r = js_parse_object(&root, data, size, IMG_MAX_MANIFEST, what, err);
    if (r < 0)
        return r;
    if ((r = get_schema_version(root, what, err)) < 0)
        return r;
    const char *mt;
    if ((r = js_get_string(&mt, root, "mediaType", false, what, err)) < 0)
        return r;
    if (img__is_index_type(mt) || (!mt && json_object_get(root, "manifests")))
        return err_set(err, -EINVAL, "%s is an image index, not a manifest", what);
    if (mt && !img__is_manifest_type(mt)) {
        _cleanup_free_ char *q = img__quote(mt);
        return err_set(err, -EINVAL,
                       "%s: mediaType %s is not an image manifest (OCI or Docker schema 2)", what,
                       q);
    }
    if (mt && desc_media_type && strcmp(mt, desc_media_type) != 0) {
        _cleanup_free_ char *q1 = img__quote(mt), *q2 = img__quote(desc_media_type);
        return err_set(err, -EINVAL,
                       "%s: mediaType %s differs from %s in the descriptor that points to it", what,
                       q1, q2);
    }
    if (!mt)
        mt = img__is_manifest_type(desc_media_type) ? desc_media_type : IMG_MT_OCI_MANIFEST;

    img_manifest m = {0};
    m.media_type = xstrdup(mt);
    json_t *cfg, *layers, *ann;
    if ((r = js_get_object(&cfg, root, "config", true, what, err)) < 0 ||
        (r = js_get_array(&layers, root, "layers", true, what, err)) < 0 ||
        (r = js_get_object(&ann, root, "annotations", false, what, err)) < 0)
        goto fail;
    {
        _cleanup_free_ char *w = xasprintf("%s: config", what);
        if ((r = img__desc_parse(&m.config, cfg, w, err)) < 0)
            goto fail;
    }
    if (strcmp(m.config.media_type, IMG_MT_OCI_CONFIG) != 0 &&
        strcmp(m.config.media_type, IMG_MT_DOCKER_CONFIG) != 0) {
        _cleanup_free_ char *q = img__quote(m.config.media_type);
        r = err_set(err, -EINVAL,
                    "%s: config media type %s is not a container image config; this manifest "
                    "describes an artifact, not a runnable image",
                    what, q);
        goto fail;
    }
    size_t n = json_array_size(layers);
    if (n > IMG_MAX_LAYERS) {
        r = err_set(err, -E2BIG, "%s has %zu layers, more than the limit of %d", what, n,
                    IMG_MAX_LAYERS);
        goto fail;
    }
    m.layers = xzalloc((n ? n : 1) * sizeof(img_layer));
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *w = xasprintf("%s: layers[%zu]", what, i);
        img_desc d;
        if ((r = img__desc_parse(&d, json_array_get(layers, i), w, err)) < 0)
            goto fail;
        img_layer *l = &m.layers[m.layer_count++];
        l->media_type = steal_ptr(&d.media_type);
        memcpy(l->digest, d.digest, IMG_DIGEST_MAX);
        l->size = d.size;
        l->annotations = steal_ptr(&d.annotations);
        img__desc_clear(&d);
        /* Unknown types are kept so inspect can show them; unpack and pack refuse them. */
        if (img__layer_type(&l->compression, &l->encrypted, l->media_type, NULL) < 0)
            l->compression = IMG_COMP_UNKNOWN;
        if (l->annotations) {
            json_t *v = json_object_get(l->annotations, IMG_ANN_KEYS_JWE);
            if (v)
                l->enc_keys_jwe = xstrdup(json_string_value(v));
            v = json_object_get(l->annotations, IMG_ANN_PUBOPTS);
            if (v)
                l->enc_pubopts = xstrdup(json_string_value(v));
        }
    }
    if (ann)
        m.annotations = json_incref(ann);
    *out = m;
    return 0;
fail:
    img__manifest_clear(&m);
    return r;
}

json_t *img__manifest_build(const img_desc *config, const img_layer *layers, size_t count,
                            const json_t *annotations)
{
    json_t *m = json_object();
    json_object_set_new(m, "schemaVersion", json_integer(2));
    json_object_set_new(m, "mediaType", json_string(IMG_MT_OCI_MANIFEST));
    json_t *c = json_object();
    json_object_set_new(c, "mediaType", json_string(config->media_type));
    json_object_set_new(c, "digest", json_string(config->digest));
    json_object_set_new(c, "size", json_integer((json_int_t)config->size));
    json_object_set_new(m, "config", c);
    json_t *arr = json_array();
    for (size_t i = 0; i < count; i++) {
        json_t *l = json_object();
        json_object_set_new(l, "mediaType", json_string(layers[i].media_type));
        json_object_set_new(l, "digest", json_string(layers[i].digest));
        json_object_set_new(l, "size", json_integer((json_int_t)layers[i].size));
        if (layers[i].annotations && json_object_size(layers[i].annotations))
            json_object_set(l, "annotations", layers[i].annotations);
        json_array_append_new(arr, l);
    }
    json_object_set_new(m, "layers", arr);
    if (annotations && json_object_size(annotations))
        json_object_set_new(m, "annotations", json_deep_copy(annotations));
    return m;
}

/* ---- config ---- */

void img__config_clear(img_config *c)
{
    if (!c)
        return;
    free(c->os);
    free(c->architecture);
    free(c->variant);
    strv_free(c->entrypoint);
    strv_free(c->cmd);
    strv_free(c->env);
    free(c->user);
    free(c->working_dir);
    strv_free(c->exposed_ports);
    free(c->stop_signal);
    memset(c, 0, sizeof(*c));
}

int img__config_parse(img_config *out, char (**diff_ids)[IMG_DIGEST_MAX], size_t *diff_id_count,
                      const void *data, size_t size, const char *what, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    *diff_ids = NULL;
    *diff_id_count = 0;
    _cleanup_json_ json_t *root = NULL;
    int r = js_parse_object(&root, data, size, IMG_MAX_CONFIG, what, err);
    if (r < 0)
        return r;
    img_config c = {0};
    char(*ids)[IMG_DIGEST_MAX] = NULL;
    json_t *cfg, *rootfs, *arr, *ports;
    const char *type;
    if ((r = dup_string(&c.os, root, "os", true, what, err)) < 0 ||
        (r = dup_string(&c.architecture, root, "architecture", true, what, err)) < 0 ||
        (r = dup_string(&c.variant, root, "variant", false, what, err)) < 0 ||
        (r = js_get_object(&cfg, root, "config", false, what, err)) < 0 ||
        (r = js_get_object(&rootfs, root, "rootfs", true, what, err)) < 0)
        goto fail;
    if (cfg) {
        _cleanup_free_ char *w = xasprintf("%s: config", what);
        if ((r = strv_get(&c.entrypoint, NULL, cfg, "Entrypoint", w, err)) < 0 ||
            (r = strv_get(&c.cmd, NULL, cfg, "Cmd", w, err)) < 0 ||
            (r = strv_get(&c.env, NULL, cfg, "Env", w, err)) < 0 ||
            (r = dup_string(&c.user, cfg, "User", false, w, err)) < 0 ||
            (r = dup_string(&c.working_dir, cfg, "WorkingDir", false, w, err)) < 0 ||
            (r = dup_string(&c.stop_signal, cfg, "StopSignal", false, w, err)) < 0 ||
            (r = js_get_object(&ports, cfg, "ExposedPorts", false, w, err)) < 0)
            goto fail;
        if (ports) {
            size_t n = json_object_size(ports), i = 0;
            if (n > STRV_MAX) {
                r = err_set(err, -E2BIG, "%s: ExposedPorts has %zu entries, more than %d", w, n,
                            STRV_MAX);
                goto fail;
            }
            c.exposed_ports = xzalloc((n + 1) * sizeof(char *));
            const char *k;
            json_t *v;
            json_object_foreach(ports, k, v)
            {
                c.exposed_ports[i++] = xstrdup(k);
            }
        }
    }
    {
        _cleanup_free_ char *w = xasprintf("%s: rootfs", what);
        if ((r = js_get_string(&type, rootfs, "type", true, w, err)) < 0 ||
            (r = js_get_array(&arr, rootfs, "diff_ids", true, w, err)) < 0)
            goto fail;
        if (strcmp(type, "layers") != 0) {
            _cleanup_free_ char *q = img__quote(type);
            r = err_set(err, -EINVAL, "%s: type is %s, expected \"layers\"", w, q);
            goto fail;
        }
        size_t n = json_array_size(arr);
        if (n > IMG_MAX_LAYERS) {
            r = err_set(err, -E2BIG, "%s: %zu diff_ids, more than the limit of %d", w, n,
                        IMG_MAX_LAYERS);
            goto fail;
        }
        ids = xzalloc((n ? n : 1) * IMG_DIGEST_MAX);
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_array_get(arr, i);
            _cleanup_free_ char *wi = xasprintf("%s: diff_ids[%zu]", w, i);
            if (!json_is_string(s)) {
                r = err_set(err, -EINVAL, "%s must be a string", wi);
                goto fail;
            }
            if ((r = img__digest_check(json_string_value(s), wi, err)) < 0)
                goto fail;
            memcpy(ids[i], json_string_value(s), IMG_DIGEST_MAX);
        }
        *diff_id_count = n;
    }
    *out = c;
    *diff_ids = ids;
    return 0;
fail:
    img__config_clear(&c);
    free(ids);
    *diff_id_count = 0;
    return r;
}

/* ---- docker save manifest.json ---- */

void img__docker_manifest_clear(img_docker_manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->len; i++) {
        free(m->v[i].config);
        strv_free(m->v[i].repo_tags);
        strv_free(m->v[i].layers);
    }
    free(m->v);
    m->v = NULL;
    m->len = 0;
}

int img__docker_manifest_parse(img_docker_manifest *out, const void *data, size_t size,
                               cista_error **err)
{
    static const char what[] = "docker-archive manifest.json";
    out->v = NULL;
    out->len = 0;
    _cleanup_json_ json_t *root = NULL;
    int r = js_parse(&root, data, size, IMG_MAX_DOCKER_MANIFEST, what, err);
    if (r < 0)
        return r;
    if (!json_is_array(root))
        return err_set(err, -EINVAL, "%s: expected a JSON array of images", what);
    size_t n = json_array_size(root);
    if (n > 4096)
        return err_set(err, -E2BIG, "%s lists %zu images, more than the limit of 4096", what, n);
    img_docker_manifest m = {xzalloc((n ? n : 1) * sizeof(img_docker_entry)), 0};
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(root, i);
        _cleanup_free_ char *w = xasprintf("%s: [%zu]", what, i);
        img_docker_entry *d = &m.v[m.len++];
        if (!json_is_object(e)) {
            r = err_set(err, -EINVAL, "%s must be an object", w);
            goto fail;
        }
        if ((r = dup_string(&d->config, e, "Config", true, w, err)) < 0 ||
            (r = strv_get(&d->repo_tags, NULL, e, "RepoTags", w, err)) < 0 ||
            (r = strv_get(&d->layers, &d->layer_count, e, "Layers", w, err)) < 0)
            goto fail;
        if (!d->layers) {
            r = err_set(err, -EINVAL, "%s: member \"Layers\" is missing", w);
            goto fail;
        }
        if (d->layer_count > IMG_MAX_LAYERS) {
            r = err_set(err, -E2BIG, "%s has %zu layers, more than the limit of %d", w,
                        d->layer_count, IMG_MAX_LAYERS);
            goto fail;
        }
        if (!d->repo_tags)
            d->repo_tags = xzalloc(sizeof(char *));
    }
    *out = m;
    return 0;
fail:
    img__docker_manifest_clear(&m);
    return r;
}

static char *docker_tags(const img_docker_manifest *m)
{
    cbuf b = CBUF_INIT;
    size_t shown = 0;
    for (size_t i = 0; i < m->len && shown < 10; i++) {
        for (char **t = m->v[i].repo_tags; *t && shown < 10; t++) {
            _cleanup_free_ char *q = img__quote(*t);
            buf_printf(&b, "%s%s", shown++ ? ", " : "", q);
        }
    }
    if (!shown)
        buf_puts(&b, "none");
    return (char *)buf_steal(&b, NULL);
}

/*
 * Docker's short forms name the same image: "busybox" is
 * "docker.io/library/busybox:latest", "cista/big:v1" is "docker.io/cista/big:v1".
 * `docker save` writes the short form, skopeo the long one.
 */
static char *docker_normalize(const char *ref)
{
    const char *p = ref;
    if (!strncmp(p, "docker.io/", 10))
        p += 10;
    else if (!strncmp(p, "index.docker.io/", 16))
        p += 16;
    if (!strncmp(p, "library/", 8)) {
        /* A plain loop: gcc 12 with ASan misreads strchr(p + 8) as out of bounds. */
        bool nested = false;
        for (const char *q = p + 8; *q; q++)
            nested |= *q == '/';
        if (!nested)
            p += 8;
    }
    const char *slash = strrchr(p, '/');
    bool has_tag = strchr(slash ? slash : p, ':') != NULL || strchr(p, '@') != NULL;
    return has_tag ? xstrdup(p) : xasprintf("%s:latest", p);
}

int img__docker_select(size_t *out, const img_docker_manifest *m, const char *tag,
                       cista_error **err)
{
    if (m->len == 0)
        return err_set(err, -ENOENT, "docker-archive manifest.json lists no images");
    if (!tag) {
        if (m->len == 1) {
            *out = 0;
            return 0;
        }
        _cleanup_free_ char *tags = docker_tags(m);
        return err_set(err, -EINVAL,
                       "docker-archive holds %zu images; name one with :REPO:TAG or :@INDEX "
                       "(tags: %s)",
                       m->len, tags);
    }
    /* skopeo's "@N" selects by position. */
    if (tag[0] == '@') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(tag + 1, &end, 10);
        if (errno || end == tag + 1 || *end || v >= m->len)
            return err_set(err, -ENOENT, "docker-archive has no image at index %s (it holds %zu)",
                           tag, m->len);
        *out = (size_t)v;
        return 0;
    }
    _cleanup_free_ char *want = docker_normalize(tag);
    for (size_t i = 0; i < m->len; i++) {
        for (char **t = m->v[i].repo_tags; *t; t++) {
            _cleanup_free_ char *have = docker_normalize(*t);
            if (!strcmp(have, want)) {
                *out = i;
                return 0;
            }
        }
    }
    _cleanup_free_ char *tags = docker_tags(m);
    _cleanup_free_ char *q = img__quote(tag);
    return err_set(err, -ENOENT, "docker-archive has no image tagged %s (tags: %s)", q, tags);
}
