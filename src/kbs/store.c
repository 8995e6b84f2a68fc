/*
 * store.c - the backend-independent half of the KBS store (see store.h):
 * argument checks, encryption of resources at rest, and the audit hash chain.
 *
 * Sealed resource layout: version byte 0x01 || IV (12) || tag (16) ||
 * ciphertext, AES-256-GCM under the master key with AAD "cista-kbs-resource:"
 * || path.
 *
 * Documents (release policies, reference values) are stored as their text
 * followed by "\n#cista-mac-v1:" and the hex HMAC-SHA256, under a key derived
 * from the master key, of ns || 0 || key || 0 || text: whoever can write the
 * database (its credentials, a replica's host) cannot loosen a policy or add
 * a measurement without the master key. A document without a valid tag is an
 * error (-EBADMSG), never a missing one. Deleting a row is not detected here:
 * a resource then falls back to a broader policy (docs/kbs.md).
 */
#include "kbs/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "kbs/store_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

#define SEAL_VERSION 0x01
#define SEAL_HDR (1 + 12 + 16)

struct kbs_store {
    const kbs_backend_ops *ops;
    kbs_backend *b;
    uint8_t key[KBS_MASTER_KEY_SIZE];
    uint8_t doc_key[32]; /* HMAC key of documents, derived from key */
    bool has_key;
};

#define DOC_TAG "\n#cista-mac-v1:"
#define DOC_TAG_LEN (sizeof(DOC_TAG) - 1 + 64)

int kbs_store_open(kbs_store **out, const kbs_store_opts *o, cista_error **err)
{
    const char *kind = o->kind ? o->kind : "sqlite";
    const kbs_backend_ops *ops = NULL;
    if (!strcmp(kind, "sqlite"))
        ops = &kbs__sqlite_ops;
    else if (!strcmp(kind, "postgres") || !strcmp(kind, "postgresql"))
        ops = &kbs__pg_ops;
    else
        return err_set(err, -EINVAL, "store: unknown kind \"%s\" (sqlite, postgres)", kind);
    kbs_backend *b = NULL;
    int r = ops->open(&b, o, err);
    if (r < 0)
        return err_wrap(err, "store (%s)", ops->name);
    kbs_store *s = xzalloc(sizeof(*s));
    s->ops = ops;
    s->b = b;
    if (o->master_key) {
        memcpy(s->key, o->master_key, KBS_MASTER_KEY_SIZE);
        s->has_key = true;
        static const char label[] = "cista kbs document mac v1";
        _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, s->key, sizeof(s->key));
        crypto_hmac_update(m, label, sizeof(label) - 1);
        crypto_hmac_final(m, s->doc_key);
    }
    *out = s;
    return 0;
}

void kbs_store_close(kbs_store *s)
{
    if (!s)
        return;
    s->ops->close(s->b);
    crypto_cleanse(s->key, sizeof(s->key));
    crypto_cleanse(s->doc_key, sizeof(s->doc_key));
    free(s);
}

void kbs__store_closep(kbs_store **s)
{
    kbs_store_close(*s);
    *s = NULL;
}

int kbs_master_key_load(uint8_t out[KBS_MASTER_KEY_SIZE], const char *path, cista_error **err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return err_set_sys(err, -errno, "master key %s", path);
    if (st.st_mode & 0077)
        return err_set(err, -EPERM,
                       "master key %s is readable by group or others (mode %03o); chmod 600 it",
                       path, (unsigned)(st.st_mode & 0777));
    char *data = NULL;
    size_t size = 0;
    int r = util_read_file(&data, &size, path, 256, err);
    if (r < 0)
        return err_wrap(err, "master key");
    if (size == KBS_MASTER_KEY_SIZE) {
        memcpy(out, data, size);
        r = 0;
    } else {
        size_t n = size;
        while (n && (data[n - 1] == '\n' || data[n - 1] == '\r'))
            n--;
        data[n] = 0;
        if (n == 2 * KBS_MASTER_KEY_SIZE)
            r = hex_decode_to(out, KBS_MASTER_KEY_SIZE, data, err);
        else
            r = err_set(err, -EINVAL,
                        "master key %s: %zu bytes; expected 32 raw bytes or 64 hex digits", path,
                        size);
    }
    crypto_free_secret(data, size);
    return r;
}

static int check_path(const char *path, cista_error **err)
{
    return kbs_check_resource_path(path, err);
}

/* A resource path that is valid, in a store that can seal and unseal it. */
static int check_sealed(const kbs_store *s, const char *path, cista_error **err)
{
    int r = check_path(path, err);
    if (r < 0)
        return r;
    if (!s->has_key)
        return err_set(err, -ENOKEY, "store: no master key configured");
    return 0;
}

int kbs_store_put_resource(kbs_store *s, const char *path, const void *data, size_t size,
                           cista_error **err)
{
    int r = check_sealed(s, path, err);
    if (r < 0)
        return r;
    if (size > KBS_MAX_RESOURCE)
        return err_set(err, -EMSGSIZE, "resource %s: %zu bytes, more than the limit of %u", path,
                       size, KBS_MAX_RESOURCE);
    size_t sealed_size = SEAL_HDR + size;
    _cleanup_free_ uint8_t *sealed = xmalloc(sealed_size);
    sealed[0] = SEAL_VERSION;
    if ((r = crypto_random(sealed + 1, 12, err)) < 0)
        return r;
    _cleanup_free_ char *aad = xasprintf("cista-kbs-resource:%s", path);
    r = crypto_gcm_encrypt(sealed + SEAL_HDR, sealed + 13, s->key, sizeof(s->key), sealed + 1, 12,
                           aad, strlen(aad), data, size, err);
    if (r < 0)
        return r;
    return s->ops->kv_put(s->b, "resource", path, sealed, sealed_size, err);
}

int kbs_store_get_resource(kbs_store *s, uint8_t **out, size_t *out_size, const char *path,
                           cista_error **err)
{
    int r = check_sealed(s, path, err);
    if (r < 0)
        return r;
    _cleanup_free_ uint8_t *sealed = NULL;
    size_t sealed_size = 0;
    if ((r = s->ops->kv_get(s->b, &sealed, &sealed_size, "resource", path, err)) < 0)
        return r;
    if (sealed_size < SEAL_HDR || sealed[0] != SEAL_VERSION)
        return err_set(err, -EBADMSG, "resource %s: stored value is malformed (%zu bytes)", path,
                       sealed_size);
    size_t n = sealed_size - SEAL_HDR;
    uint8_t *pt = xmalloc(n + 1);
    _cleanup_free_ char *aad = xasprintf("cista-kbs-resource:%s", path);
    r = crypto_gcm_decrypt(pt, s->key, sizeof(s->key), sealed + 1, 12, aad, strlen(aad),
                           sealed + SEAL_HDR, n, sealed + 13, err);
    if (r < 0) {
        crypto_free_secret(pt, n + 1);
        return err_set(err, -EBADMSG,
                       "resource %s does not decrypt under the master key (another master key, "
                       "or the row was modified or moved)",
                       path);
    }
    pt[n] = 0;
    *out = pt;
    *out_size = n;
    return 0;
}

int kbs_store_delete_resource(kbs_store *s, const char *path, cista_error **err)
{
    int r = check_path(path, err);
    if (r < 0)
        return r;
    return s->ops->kv_delete(s->b, "resource", path, err);
}

int kbs_store_list_resources(kbs_store *s, json_t **out, cista_error **err)
{
    return s->ops->kv_list(s->b, out, "resource", err);
}

/* ---- counters ---- */

int kbs__counter_from_row(kbs_counter *out, int64_t gen, const char *root_hex, int64_t updated,
                          cista_error **err)
{
    memset(out, 0, sizeof(*out));
    size_t n = root_hex ? strlen(root_hex) : 0;
    if (gen < 0 || n % 2 || n > 2 * KBS_COUNTER_ROOT_MAX)
        return err_set(err, -EBADMSG,
                       "store: counter row is malformed (generation %lld, root of %zu hex digits)",
                       (long long)gen, n);
    if (n && hex_decode_to(out->root, n / 2, root_hex, err) < 0)
        return err_wrap(err, "store: counter root");
    out->generation = (uint64_t)gen;
    out->root_size = n / 2;
    out->updated = updated;
    return 0;
}

static int counter_args(const char *path, uint64_t generation, size_t root_size, cista_error **err)
{
    int r = check_path(path, err);
    if (r < 0)
        return r;
    if (generation > (uint64_t)KBS_COUNTER_GEN_MAX)
        return err_set(err, -EINVAL, "counter %s: generation %llu is above the limit of 2^63-1",
                       path, (unsigned long long)generation);
    if (root_size > KBS_COUNTER_ROOT_MAX)
        return err_set(err, -EINVAL, "counter %s: root of %zu bytes, more than the limit of %d",
                       path, root_size, KBS_COUNTER_ROOT_MAX);
    return 0;
}

int kbs_store_counter_get(kbs_store *s, kbs_counter *out, const char *path, cista_error **err)
{
    int r = check_path(path, err);
    if (r < 0)
        return r;
    return s->ops->counter_get(s->b, out, path, err);
}

int kbs_store_counter_cas(kbs_store *s, kbs_counter *out_current, const char *path,
                          uint64_t expected, uint64_t generation, const uint8_t *root,
                          size_t root_size, time_t now, cista_error **err)
{
    memset(out_current, 0, sizeof(*out_current));
    int r = counter_args(path, generation, root_size, err);
    if (r < 0)
        return r;
    if (expected > (uint64_t)KBS_COUNTER_GEN_MAX)
        return err_set(err, -EINVAL, "counter %s: expected generation %llu is above 2^63-1", path,
                       (unsigned long long)expected);
    if (generation <= expected) {
        /* Never a move backwards or sideways; report the current value like a conflict. */
        cista_error *e2 = NULL;
        r = s->ops->counter_get(s->b, out_current, path, &e2);
        err_free(e2);
        if (r < 0 && r != -ENOENT)
            memset(out_current, 0, sizeof(*out_current));
        return err_set(err, -ESTALE,
                       "counter %s: new generation %llu is not above the expected generation "
                       "%llu",
                       path, (unsigned long long)generation, (unsigned long long)expected);
    }
    _cleanup_free_ char *hex = hex_encode(root, root_size);
    return s->ops->counter_cas(s->b, out_current, path, (int64_t)expected, (int64_t)generation, hex,
                               (int64_t)now, err);
}

int kbs_store_counter_set(kbs_store *s, const char *path, uint64_t generation, const uint8_t *root,
                          size_t root_size, time_t now, cista_error **err)
{
    int r = counter_args(path, generation, root_size, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *hex = hex_encode(root, root_size);
    return s->ops->counter_set(s->b, path, (int64_t)generation, hex, (int64_t)now, err);
}

int kbs_store_counter_delete(kbs_store *s, const char *path, cista_error **err)
{
    int r = check_path(path, err);
    if (r < 0)
        return r;
    return s->ops->counter_delete(s->b, path, err);
}

static int check_ns(const char *ns, const char *key, cista_error **err)
{
    if (strcmp(ns, "policy") && strcmp(ns, "refvals"))
        return err_set(err, -EINVAL, "store: unknown document namespace \"%s\"", ns);
    if (!key || !*key || strlen(key) > KBS_MAX_PATH)
        return err_set(err, -EINVAL, "store: document key must be 1-%d bytes", KBS_MAX_PATH);
    return 0;
}

/* The hex tag of document @ns/@key with @n bytes of @text. */
static void doc_mac(char out[65], const kbs_store *s, const char *ns, const char *key,
                    const char *text, size_t n)
{
    uint8_t tag[32];
    _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, s->doc_key, sizeof(s->doc_key));
    crypto_hmac_update(m, ns, strlen(ns) + 1);
    crypto_hmac_update(m, key, strlen(key) + 1);
    crypto_hmac_update(m, text, n);
    crypto_hmac_final(m, tag);
    _cleanup_free_ char *hex = hex_encode(tag, sizeof(tag));
    memcpy(out, hex, 65);
}

int kbs_store_set_doc(kbs_store *s, const char *ns, const char *key, const char *text,
                      cista_error **err)
{
    int r = check_ns(ns, key, err);
    if (r < 0)
        return r;
    if (!s->has_key)
        return s->ops->kv_put(s->b, ns, key, text, strlen(text), err);
    char mac[65];
    doc_mac(mac, s, ns, key, text, strlen(text));
    _cleanup_free_ char *tagged = xasprintf("%s" DOC_TAG "%s", text, mac);
    return s->ops->kv_put(s->b, ns, key, tagged, strlen(tagged), err);
}

/* Check and strip the tag of a stored document (@v, @n bytes, NUL-terminated by the caller). */
static int doc_open(const kbs_store *s, char *v, size_t n, const char *ns, const char *key,
                    cista_error **err)
{
    bool tagged = n >= DOC_TAG_LEN && !memcmp(v + n - DOC_TAG_LEN, DOC_TAG, sizeof(DOC_TAG) - 1);
    if (!s->has_key) { /* nothing to check with: the text as written */
        if (tagged)
            v[n - DOC_TAG_LEN] = '\0';
        return 0;
    }
    if (!tagged)
        return err_set(err, -EBADMSG,
                       "store: document %s/%s has no integrity tag: it was written outside this "
                       "KBS (or by a cista before tags); set it again with `cista kbs admin`",
                       ns, key);
    char want[65];
    doc_mac(want, s, ns, key, v, n - DOC_TAG_LEN);
    if (!crypto_memeq(want, v + n - 64, 64))
        return err_set(err, -EBADMSG,
                       "store: document %s/%s was modified outside this KBS (its integrity tag "
                       "does not match); refusing it",
                       ns, key);
    v[n - DOC_TAG_LEN] = '\0';
    return 0;
}

int kbs_store_get_doc(kbs_store *s, char **out, const char *ns, const char *key, cista_error **err)
{
    int r = check_ns(ns, key, err);
    if (r < 0)
        return r;
    uint8_t *v = NULL;
    size_t n = 0;
    if ((r = s->ops->kv_get(s->b, &v, &n, ns, key, err)) < 0)
        return r;
    if (memchr(v, 0, n)) {
        free(v);
        return err_set(err, -EBADMSG, "store: document %s/%s holds a NUL byte", ns, key);
    }
    if ((r = doc_open(s, (char *)v, n, ns, key, err)) < 0) {
        free(v);
        return r;
    }
    *out = (char *)v;
    return 0;
}

int kbs_store_delete_doc(kbs_store *s, const char *ns, const char *key, cista_error **err)
{
    int r = check_ns(ns, key, err);
    if (r < 0)
        return r;
    return s->ops->kv_delete(s->b, ns, key, err);
}

int kbs_store_list_docs(kbs_store *s, json_t **out, const char *ns, cista_error **err)
{
    int r = check_ns(ns, "x", err);
    if (r < 0)
        return r;
    return s->ops->kv_list(s->b, out, ns, err);
}

int kbs_store_use_jti(kbs_store *s, const char *jti, time_t exp, time_t now, cista_error **err)
{
    if (!jti || !*jti || strlen(jti) > 128)
        return err_set(err, -EINVAL, "admin token: jti must be 1-128 bytes");
    return s->ops->use_jti(s->b, jti, exp, now, err);
}

int kbs_store_session_add(kbs_store *s, const kbs_session *sess, time_t now, cista_error **err)
{
    return s->ops->sess_add(s->b, sess, now, err);
}

int kbs_store_session_find(kbs_store *s, kbs_session *out, const char *id, time_t now,
                           cista_error **err)
{
    return s->ops->sess_find(s->b, out, id, now, err);
}

int kbs_store_session_consume(kbs_store *s, const char *id, time_t now, cista_error **err)
{
    return s->ops->sess_consume(s->b, id, now, err);
}

int kbs_store_session_set_token(kbs_store *s, const char *id, const char *token, time_t expires,
                                cista_error **err)
{
    return s->ops->sess_set_token(s->b, id, token, expires, err);
}

/* ---- audit ---- */

void kbs__audit_hash(char out[65], const char *prev_hex, int64_t time, const char *body)
{
    _cleanup_hash_ crypto_hash *h = crypto_hash_new(CRYPTO_SHA256);
    char t[32];
    snprintf(t, sizeof(t), "\n%lld\n", (long long)time);
    crypto_hash_update(h, prev_hex, strlen(prev_hex));
    crypto_hash_update(h, t, strlen(t));
    crypto_hash_update(h, body, strlen(body));
    uint8_t d[32];
    crypto_hash_final(h, d);
    _cleanup_free_ char *hex = hex_encode(d, sizeof(d));
    memcpy(out, hex, 65);
}

static void set_opt(json_t *o, const char *k, const char *v)
{
    if (v)
        json_object_set_new(o, k, json_string(v));
}

char *kbs_store_audit_body(const kbs_audit_entry *e)
{
    _cleanup_json_ json_t *o = json_object();
    set_opt(o, "event", e->event);
    set_opt(o, "tee", e->tee);
    set_opt(o, "claims_digest", e->claims_digest);
    set_opt(o, "resource", e->resource);
    set_opt(o, "decision", e->decision);
    if (e->reason) {
        /* Bounded: reasons come from our own messages, never from secrets. */
        json_object_set_new(o, "reason", json_stringn(e->reason, strnlen(e->reason, 1024)));
    }
    set_opt(o, "peer", e->peer);
    return json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
}

int kbs_store_audit_append_bodies(kbs_store *s, const char *const *bodies, const time_t *times,
                                  size_t count, cista_error **err)
{
    if (count == 0)
        return 0;
    return s->ops->audit_append(s->b, bodies, times, count, err);
}

int kbs_store_audit_append(kbs_store *s, const kbs_audit_entry *e, time_t now, cista_error **err)
{
    _cleanup_free_ char *body = kbs_store_audit_body(e);
    if (!body)
        return err_set(err, -EINVAL, "audit: entry is not valid UTF-8");
    const char *b = body;
    return s->ops->audit_append(s->b, &b, &now, 1, err);
}

int kbs_store_audit_list(kbs_store *s, json_t **out, int64_t after, size_t limit, cista_error **err)
{
    if (limit == 0 || limit > 10000)
        limit = 10000;
    int r = s->ops->audit_list(s->b, out, after, limit, err);
    if (r < 0)
        return r;
    size_t i;
    json_t *e;
    json_array_foreach(*out, i, e)
    {
        const char *body = json_string_value(json_object_get(e, "body"));
        json_t *entry = body ? json_loads(body, 0, NULL) : NULL;
        json_object_set_new(e, "entry", entry ? entry : json_null());
    }
    return 0;
}

int kbs_store_audit_verify(kbs_store *s, size_t *out_count, cista_error **err)
{
    char prev[65] = "";
    int64_t after = 0;
    size_t count = 0;
    for (;;) {
        _cleanup_json_ json_t *page = NULL;
        int r = s->ops->audit_list(s->b, &page, after, 1000, err);
        if (r < 0)
            return r;
        if (json_array_size(page) == 0)
            break;
        size_t i;
        json_t *e;
        json_array_foreach(page, i, e)
        {
            int64_t id = json_integer_value(json_object_get(e, "id"));
            const char *p = json_string_value(json_object_get(e, "prev"));
            const char *h = json_string_value(json_object_get(e, "hash"));
            const char *body = json_string_value(json_object_get(e, "body"));
            int64_t t = json_integer_value(json_object_get(e, "time"));
            if (!p || !h || !body)
                return err_set(err, -EBADMSG, "audit entry %lld is incomplete", (long long)id);
            if (strcmp(p, prev) != 0)
                return err_set(err, -EBADMSG,
                               "audit entry %lld does not link to its predecessor (an entry was "
                               "removed or reordered)",
                               (long long)id);
            char want[65];
            kbs__audit_hash(want, p, t, body);
            if (strcmp(want, h) != 0)
                return err_set(err, -EBADMSG,
                               "audit entry %lld: its hash does not match its contents (the "
                               "entry was modified)",
                               (long long)id);
            memcpy(prev, h, 65);
            after = id;
            count++;
        }
    }
    *out_count = count;
    return 0;
}
