/*
 * store.c - the backend-independent half of the KBS store (see store.h):
 * argument checks, encryption of resources at rest, document tags and the
 * audit chain.
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
 *
 * The audit log is a chain: each entry stores its predecessor's hash (prev,
 * "" for the first) and its own hash over prev || "\n" || time || "\n" ||
 * body, in one of two forms:
 *   unkeyed (written by a cista before keyed chains, or by a store without a
 *   master key): 64 hex digits of SHA-256(input). Anyone can recompute it, so
 *   it only shows accidents.
 *   keyed: "hmac:" and the hex HMAC-SHA256(A, input), A derived from the
 *   master key ("cista kbs audit mac v1"). Without the master key no one can
 *   make a keyed entry that verifies.
 * The form is read from the stored hash, so dropping "hmac:" makes an entry
 * unkeyed, which is the rewrite below. A valid chain is an unkeyed prefix
 * (possibly empty) followed by keyed entries only. Why a database writer,
 * who lacks the master key, cannot edit keyed entries by downgrading them to
 * the unkeyed form:
 * - Rewriting keyed entry i in the unkeyed form changes its hash, so entry
 *   i+1 no longer links (its prev is under its MAC). The rewrite must go on
 *   to the end of the log, and if a keyed entry precedes entry i, an unkeyed
 *   entry after a keyed one is refused. The first keyed entry's MAC covers
 *   the last unkeyed hash, which (SHA-256 chain) pins the unkeyed prefix.
 * - What remains is rewriting every keyed entry: an all-unkeyed log, exactly
 *   what a store written by an older cista looks like. No marker row can tell
 *   the two apart by its presence, since a row is deleted as easily as
 *   written (a tag shows a modification, not a deletion). So an unkeyed
 *   prefix is never accepted on the database's word: an administrator adopts
 *   it once, after the upgrade (kbs_store_audit_adopt()), which stores a
 *   tagged document naming the prefix's last hash, and the prefix must end
 *   exactly there: an unkeyed entry after it is a rewritten keyed entry, an
 *   earlier end means removed entries. Deleting the document makes the prefix
 *   unadopted again, which is reported. Appending never adopts anything: what
 *   it sees may be the writer's rewrite. A log started by this cista has no
 *   unkeyed prefix and needs no adoption.
 * Not detectable from inside the database: removal of the newest entries and
 * a restore of an older copy of the whole database; both need an anchor kept
 * outside it (docs/kbs.md).
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

/* How entries are chained (see the top of this file); the backends only see it as opaque. */
struct kbs_audit_mac {
    bool keyed;
    uint8_t key[32]; /* HMAC key of the chain, derived from the master key */
};

struct kbs_store {
    const kbs_backend_ops *ops;
    kbs_backend *b;
    uint8_t key[KBS_MASTER_KEY_SIZE];
    uint8_t doc_key[32]; /* HMAC key of documents, derived from key */
    bool has_key;
    kbs_audit_mac audit;
};

#define DOC_TAG "\n#cista-mac-v1:"
#define DOC_TAG_LEN (sizeof(DOC_TAG) - 1 + 64)

#define AUDIT_KEYED "hmac:"
/* The tagged document naming the adopted unkeyed prefix's last hash. */
#define AUDIT_ADOPT_NS "audit"
#define AUDIT_ADOPT_KEY "adopted-unkeyed-prefix"

/* @out = HMAC-SHA256(@key, @label): one key per purpose, so a tag of one kind never passes as
 * another. */
static void derive_key(uint8_t out[32], const uint8_t key[KBS_MASTER_KEY_SIZE], const char *label)
{
    _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, key, KBS_MASTER_KEY_SIZE);
    crypto_hmac_update(m, label, strlen(label));
    crypto_hmac_final(m, out);
}

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
        derive_key(s->doc_key, s->key, "cista kbs document mac v1");
        derive_key(s->audit.key, s->key, "cista kbs audit mac v1");
        s->audit.keyed = true;
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
    crypto_cleanse(&s->audit, sizeof(s->audit));
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

int kbs_store_get_sealed(kbs_store *s, uint8_t **out, size_t *out_size, const char *path,
                         cista_error **err)
{
    int r = check_sealed(s, path, err);
    if (r < 0)
        return r;
    return s->ops->kv_get(s->b, out, out_size, "resource", path, err);
}

int kbs_store_unseal(kbs_store *s, uint8_t **out, size_t *out_size, const char *path,
                     const uint8_t *sealed, size_t sealed_size, cista_error **err)
{
    int r = check_sealed(s, path, err);
    if (r < 0)
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

int kbs_store_get_resource(kbs_store *s, uint8_t **out, size_t *out_size, const char *path,
                           cista_error **err)
{
    _cleanup_free_ uint8_t *sealed = NULL;
    size_t sealed_size = 0;
    int r = kbs_store_get_sealed(s, &sealed, &sealed_size, path, err);
    if (r < 0)
        return r;
    return kbs_store_unseal(s, out, out_size, path, sealed, sealed_size, err);
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

/* Store @text as document @ns/@key, tagged when the store has a master key. */
static int doc_put(kbs_store *s, const char *ns, const char *key, const char *text,
                   cista_error **err)
{
    if (!s->has_key)
        return s->ops->kv_put(s->b, ns, key, text, strlen(text), err);
    char mac[65];
    doc_mac(mac, s, ns, key, text, strlen(text));
    _cleanup_free_ char *tagged = xasprintf("%s" DOC_TAG "%s", text, mac);
    return s->ops->kv_put(s->b, ns, key, tagged, strlen(tagged), err);
}

int kbs_store_set_doc(kbs_store *s, const char *ns, const char *key, const char *text,
                      cista_error **err)
{
    int r = check_ns(ns, key, err);
    if (r < 0)
        return r;
    return doc_put(s, ns, key, text, err);
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

/* Read document @ns/@key and check its tag; -ENOENT when missing. Caller frees *out. */
static int doc_get(kbs_store *s, char **out, const char *ns, const char *key, cista_error **err)
{
    uint8_t *v = NULL;
    size_t n = 0;
    int r = s->ops->kv_get(s->b, &v, &n, ns, key, err);
    if (r < 0)
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

int kbs_store_get_doc(kbs_store *s, char **out, const char *ns, const char *key, cista_error **err)
{
    int r = check_ns(ns, key, err);
    if (r < 0)
        return r;
    return doc_get(s, out, ns, key, err);
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

static bool audit_is_keyed(const char *hash)
{
    return !strncmp(hash, AUDIT_KEYED, sizeof(AUDIT_KEYED) - 1);
}

/* The hash of an entry: keyed under @mac, or unkeyed when @mac is NULL (see the top). */
static void audit_hash(char out[KBS__AUDIT_HASH_MAX], const kbs_audit_mac *mac, const char *prev,
                       int64_t time, const char *body)
{
    char t[32];
    snprintf(t, sizeof(t), "\n%lld\n", (long long)time);
    uint8_t d[32];
    if (mac) {
        _cleanup_hmac_ crypto_hmac *m = crypto_hmac_new(CRYPTO_SHA256, mac->key, sizeof(mac->key));
        crypto_hmac_update(m, prev, strlen(prev));
        crypto_hmac_update(m, t, strlen(t));
        crypto_hmac_update(m, body, strlen(body));
        crypto_hmac_final(m, d);
    } else {
        _cleanup_hash_ crypto_hash *h = crypto_hash_new(CRYPTO_SHA256);
        crypto_hash_update(h, prev, strlen(prev));
        crypto_hash_update(h, t, strlen(t));
        crypto_hash_update(h, body, strlen(body));
        crypto_hash_final(h, d);
    }
    _cleanup_free_ char *hex = hex_encode(d, sizeof(d));
    snprintf(out, KBS__AUDIT_HASH_MAX, "%s%s", mac ? AUDIT_KEYED : "", hex);
}

int kbs__audit_link(char out[KBS__AUDIT_HASH_MAX], const kbs_audit_mac *mac, const char *prev,
                    int64_t time, const char *body, cista_error **err)
{
    if (!mac->keyed && audit_is_keyed(prev))
        return err_set(err, -ENOKEY,
                       "audit: the newest entry of the log is keyed under a master key and this "
                       "store has none; an unkeyed entry after it would break the chain "
                       "(configure the KBS's master_key)");
    audit_hash(out, mac->keyed ? mac : NULL, prev, time, body);
    return 0;
}

/* One member of an audit entry, when @v is set: after @sep ('{' first, then ','). */
static void put_member(cbuf *b, char *sep, const char *k, const char *v, size_t max)
{
    if (!v)
        return;
    buf_put(b, sep, 1);
    *sep = ',';
    js_buf_put_string(b, k, strlen(k), false);
    buf_put(b, ":", 1);
    js_buf_put_string_lossy(b, v, strnlen(v, max));
}

char *kbs_store_audit_body(const kbs_audit_entry *e)
{
    /*
     * Written directly rather than through a jansson object and json_dumps() (a few µs per
     * entry, three entries per attestation), byte for byte what json_dumps(JSON_COMPACT |
     * JSON_SORT_KEYS) wrote for valid UTF-8: so the members in sorted order. A value that is not
     * UTF-8 (a reason quoting a client's bytes, or cut at 1024 bytes inside a character) keeps
     * its member with U+FFFD for the bad bytes; jansson dropped the member.
     */
    cbuf b = CBUF_INIT;
    buf_reserve(&b, 256);
    char sep = '{';
    put_member(&b, &sep, "claims_digest", e->claims_digest, SIZE_MAX);
    put_member(&b, &sep, "decision", e->decision, SIZE_MAX);
    put_member(&b, &sep, "event", e->event, SIZE_MAX);
    put_member(&b, &sep, "peer", e->peer, SIZE_MAX);
    /* Bounded: reasons come from our own messages, never from secrets. */
    put_member(&b, &sep, "reason", e->reason, 1024);
    put_member(&b, &sep, "resource", e->resource, SIZE_MAX);
    put_member(&b, &sep, "tee", e->tee, SIZE_MAX);
    buf_puts(&b, sep == '{' ? "{}" : "}");
    return (char *)buf_steal(&b, NULL);
}

int kbs_store_audit_append_bodies(kbs_store *s, const char *const *bodies, const time_t *times,
                                  size_t count, cista_error **err)
{
    if (count == 0)
        return 0;
    return s->ops->audit_append(s->b, &s->audit, bodies, times, count, err);
}

int kbs_store_audit_append(kbs_store *s, const kbs_audit_entry *e, time_t now, cista_error **err)
{
    _cleanup_free_ char *body = kbs_store_audit_body(e);
    const char *b = body;
    return s->ops->audit_append(s->b, &s->audit, &b, &now, 1, err);
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

/* What audit_walk() found. */
typedef struct {
    size_t count;
    size_t unkeyed;                         /* entries in the unkeyed prefix */
    int64_t first_id;                       /* of the log */
    int64_t last_unkeyed_id;                /* of the unkeyed prefix */
    char unkeyed_head[KBS__AUDIT_HASH_MAX]; /* the prefix's last hash, "" when it is empty */
} audit_walk_result;

/*
 * Walk the whole chain: each entry links to its predecessor, its hash matches its contents
 * (SHA-256 when unkeyed, the MAC when keyed, which needs the master key), and no unkeyed entry
 * follows a keyed one or the adopted prefix ending at hash @adopted (NULL: none adopted).
 * Whether the unkeyed prefix is adopted is the caller's check.
 */
static int audit_walk(kbs_store *s, audit_walk_result *out, const char *adopted, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    char prev[KBS__AUDIT_HASH_MAX] = "";
    int64_t after = 0, first_keyed = 0;
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
            long long id = json_integer_value(json_object_get(e, "id"));
            const char *p = json_string_value(json_object_get(e, "prev"));
            const char *h = json_string_value(json_object_get(e, "hash"));
            const char *body = json_string_value(json_object_get(e, "body"));
            int64_t t = json_integer_value(json_object_get(e, "time"));
            if (!p || !h || !body)
                return err_set(err, -EBADMSG, "audit entry %lld is incomplete", id);
            if (strcmp(p, prev) != 0)
                return err_set(err, -EBADMSG,
                               "audit entry %lld does not link to its predecessor (an entry was "
                               "removed or reordered)",
                               id);
            bool keyed = audit_is_keyed(h);
            if (keyed && !s->audit.keyed)
                return err_set(err, -ENOKEY,
                               "audit entry %lld is keyed (an HMAC under the master key) and this "
                               "store was opened without a master key, so the log cannot be "
                               "verified; configure the KBS's master_key",
                               id);
            /* the hash first: an entry that fails it was edited carelessly; one that passes
             * but is out of place was rewritten with the unkeyed chain recomputed */
            char want[KBS__AUDIT_HASH_MAX];
            audit_hash(want, keyed ? &s->audit : NULL, p, t, body);
            size_t n = strlen(want);
            if (strlen(h) != n || !crypto_memeq(want, h, n))
                return err_set(err, -EBADMSG,
                               "audit entry %lld: its %s does not match its contents (the entry "
                               "was modified%s)",
                               id, keyed ? "MAC" : "hash",
                               keyed ? ", or written under another master key" : "");
            if (!keyed && first_keyed)
                return err_set(err, -EBADMSG,
                               "audit entry %lld is unkeyed but follows keyed entries (from entry "
                               "%lld): a keyed entry was rewritten in the unkeyed form",
                               id, (long long)first_keyed);
            if (!keyed && adopted && *adopted && !strcmp(p, adopted))
                return err_set(err, -EBADMSG,
                               "audit entry %lld is unkeyed but the adopted unkeyed prefix ends "
                               "before it: a keyed entry was rewritten in the unkeyed form",
                               id);
            if (out->count == 0)
                out->first_id = id;
            if (keyed) {
                if (!first_keyed)
                    first_keyed = id;
            } else {
                out->unkeyed++;
                out->last_unkeyed_id = id;
                memcpy(out->unkeyed_head, h, n + 1);
            }
            memcpy(prev, h, n + 1);
            after = id;
            out->count++;
        }
    }
    return 0;
}

/* The adopted unkeyed prefix's last hash into *out (caller frees), or NULL when none was. */
static int audit_adopted(kbs_store *s, char **out, cista_error **err)
{
    *out = NULL;
    _cleanup_free_ char *doc = NULL;
    cista_error *e2 = NULL;
    int r = doc_get(s, &doc, AUDIT_ADOPT_NS, AUDIT_ADOPT_KEY, &e2);
    if (r == -ENOENT) {
        err_free(e2);
        return 0;
    }
    if (r < 0) {
        _cleanup_free_ char *why = err_str(e2);
        err_free(e2);
        return err_set(err, r, "audit: the record of the adopted unkeyed entries: %s", why);
    }
    _cleanup_json_ json_t *d = json_loads(doc, 0, NULL);
    const char *head = json_string_value(json_object_get(d, "head"));
    if (!head || !*head) /* tagged, so written by a KBS: never expected */
        return err_set(err, -EBADMSG,
                       "audit: the record of the adopted unkeyed entries names no hash");
    *out = xstrdup(head);
    return 0;
}

int kbs_store_audit_verify(kbs_store *s, size_t *out_count, cista_error **err)
{
    _cleanup_free_ char *adopted = NULL;
    int r;
    /* Without the master key the record cannot be authenticated: an unkeyed log is checked as
     * it always was, and a keyed entry is an error (audit_walk). */
    if (s->audit.keyed && (r = audit_adopted(s, &adopted, err)) < 0)
        return r;
    audit_walk_result w;
    if ((r = audit_walk(s, &w, adopted, err)) < 0)
        return r;
    if (s->audit.keyed && w.unkeyed > 0 && !adopted)
        return err_set(err, -EBADMSG,
                       "audit entries %lld-%lld are unkeyed (written by a cista before keyed "
                       "chains, or without a master key) and were never adopted, so nothing "
                       "shows a database writer did not rewrite them; review them, then adopt "
                       "them once with `cista kbs admin audit-adopt %s`",
                       (long long)w.first_id, (long long)w.last_unkeyed_id, w.unkeyed_head);
    if (adopted && strcmp(adopted, w.unkeyed_head) != 0) {
        if (w.unkeyed == 0)
            return err_set(err, -EBADMSG,
                           "the adopted unkeyed prefix ends at hash %s, but the log has no "
                           "unkeyed entries: entries were removed",
                           adopted);
        return err_set(err, -EBADMSG,
                       "the adopted unkeyed prefix ends at hash %s, but the log's unkeyed "
                       "entries end at entry %lld (hash %s): unkeyed entries were removed or "
                       "rewritten",
                       adopted, (long long)w.last_unkeyed_id, w.unkeyed_head);
    }
    *out_count = w.count;
    return 0;
}

int kbs_store_audit_adopt(kbs_store *s, const char *head, cista_error **err)
{
    if (!s->audit.keyed)
        return err_set(err, -ENOKEY, "audit: adopting unkeyed entries needs the master key");
    if (!head || strlen(head) != 64 || strspn(head, "0123456789abcdef") != 64)
        return err_set(err, -EINVAL,
                       "audit: the hash to adopt must be the 64 lower-case hex digits of the "
                       "last unkeyed entry's hash");
    _cleanup_free_ char *adopted = NULL;
    int r = audit_adopted(s, &adopted, err);
    if (r < 0)
        return r;
    if (adopted && !strcmp(adopted, head))
        return 0;
    if (adopted)
        return err_set(err, -EINVAL,
                       "audit: the unkeyed entries ending at hash %s were already adopted; "
                       "adopting another prefix would accept whatever a database writer put "
                       "there (the log was modified since, if it no longer ends there)",
                       adopted);
    audit_walk_result w;
    if ((r = audit_walk(s, &w, NULL, err)) < 0) {
        err_wrap(err, "audit: not adopting");
        return r;
    }
    if (w.unkeyed == 0)
        return err_set(err, -EINVAL, "audit: the log has no unkeyed entries: nothing to adopt");
    if (strcmp(w.unkeyed_head, head) != 0)
        return err_set(err, -EINVAL,
                       "audit: the unkeyed entries (%lld-%lld) end at hash %s, not %s: review "
                       "the log again",
                       (long long)w.first_id, (long long)w.last_unkeyed_id, w.unkeyed_head, head);
    _cleanup_json_ json_t *d = json_pack("{s:s}", "head", head);
    _cleanup_free_ char *text = json_dumps(d, JSON_COMPACT);
    return doc_put(s, AUDIT_ADOPT_NS, AUDIT_ADOPT_KEY, text, err);
}
