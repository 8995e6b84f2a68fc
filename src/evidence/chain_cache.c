/*
 * chain_cache.c - an optional cache of verification outcomes
 * (ev_verify_opts.chain_cache), so a verifier that sees the same device
 * certificate again (a KBS appraising one host's evidence every few
 * seconds) does the signature verifications over the evidence only instead
 * of re-verifying chains and re-parsing what it parsed before.
 *
 * An entry is keyed by exact bytes: the concatenation of the caller's key
 * parts, each with its length, compared with memcmp (never a digest of
 * them, so different bytes never hit). It holds what the verification
 * established (a verified chain, a public-key context ready to verify
 * with a parsed key, a small blob of plain facts) and the window of "now" in which that holds; a
 * lookup outside the window misses, so validity periods are checked on every call. Only successes
 * are put. Bounded; when full the oldest entry is replaced. Thread-safe (one mutex).
 *
 * ev__chain_cache_get/put are the leaf-certificate form snp and nvidia-gpu
 * use (key: a scope and the SHA-256 of the leaf's DER); dcap uses the
 * generic ev__cache_get/put with keys that name every input.
 *
 * Also here: ev__cert_embedded(), the compiled-in vendor certificates
 * parsed once per process (constant data, so this global cache is safe to
 * share; it is never freed).
 */
#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/util.h"

#define SCOPE_MAX 96 /* ev__chain_cache_get/put scopes */

typedef struct {
    uint8_t *key; /* (le32 size, bytes) per part */
    size_t key_size;
    time_t not_before, not_after; /* inclusive window of "now" */
    STACK_OF(X509) * chain;       /* owned, may be NULL */
    EVP_PKEY_CTX *vctx;           /* owned template (handed out as duplicates), may be NULL */
    uint8_t *blob;                /* owned copy, may be NULL */
    size_t blob_size;
} cache_entry;

struct ev_chain_cache {
    pthread_mutex_t lock;
    size_t max, count, next; /* next: slot replaced when full */
    cache_entry *e;
};

static void entry_clear(cache_entry *e)
{
    free(e->key);
    sk_X509_pop_free(e->chain, X509_free);
    EVP_PKEY_CTX_free(e->vctx);
    free(e->blob);
    memset(e, 0, sizeof(*e));
}

ev_chain_cache *ev_chain_cache_new(size_t max_entries)
{
    ev_chain_cache *c = xzalloc(sizeof(*c));
    c->max = max_entries ? max_entries : 1;
    c->e = xzalloc(c->max * sizeof(*c->e));
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void ev_chain_cache_free(ev_chain_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->count; i++)
        entry_clear(&c->e[i]);
    pthread_mutex_destroy(&c->lock);
    free(c->e);
    free(c);
}

size_t ev_chain_cache_count(ev_chain_cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* ---- keys ---- */

static size_t key_size(const ev__key_part *k, size_t n)
{
    size_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += 4 + k[i].size;
    return s;
}

static uint8_t *key_new(const ev__key_part *k, size_t n, size_t size)
{
    uint8_t *out = xmalloc(size ? size : 1), *p = out;
    for (size_t i = 0; i < n; i++) {
        ev__put_le32(p, (uint32_t)k[i].size);
        if (k[i].size)
            memcpy(p + 4, k[i].p, k[i].size);
        p += 4 + k[i].size;
    }
    return out;
}

/* The stored key @e equals the parts @k (the caller checked the total size). */
static bool key_eq(const cache_entry *e, const ev__key_part *k, size_t n)
{
    const uint8_t *p = e->key;
    for (size_t i = 0; i < n; i++) {
        if (ev__le32(p) != k[i].size || (k[i].size && memcmp(p + 4, k[i].p, k[i].size) != 0))
            return false;
        p += 4 + k[i].size;
    }
    return true;
}

/* Parts no longer than the stored length field allows. */
static bool key_ok(const ev__key_part *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (k[i].size > UINT32_MAX || (k[i].size && !k[i].p))
            return false;
    return n > 0;
}

/* Index of the entry keyed @k, or -1. Called with the lock held. */
static long find(ev_chain_cache *c, const ev__key_part *k, size_t n, size_t size)
{
    for (size_t i = 0; i < c->count; i++)
        if (c->e[i].key_size == size && key_eq(&c->e[i], k, n))
            return (long)i;
    return -1;
}

bool ev__cache_get(ev_chain_cache *c, const ev__key_part *key, size_t nkey, time_t now,
                   STACK_OF(X509) * *out_chain, EVP_PKEY_CTX **out_vctx, void *blob,
                   size_t blob_size)
{
    if (!c || !key_ok(key, nkey))
        return false;
    if (!now)
        now = time(NULL);
    size_t size = key_size(key, nkey);
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    long i = find(c, key, nkey, size);
    if (i >= 0) {
        cache_entry *e = &c->e[i];
        /* outside the window (verify again, and report why) or not what the caller expects */
        hit = now >= e->not_before && now <= e->not_after && e->blob_size == blob_size &&
              (!out_chain || e->chain) && (!out_vctx || e->vctx);
        /* a context is used by one thread at a time: each caller gets its own copy */
        if (hit && out_vctx && !(*out_vctx = EVP_PKEY_CTX_dup(e->vctx)))
            hit = false;
        if (hit) {
            if (out_chain && !(*out_chain = X509_chain_up_ref(e->chain)))
                abort();
            if (blob_size)
                memcpy(blob, e->blob, blob_size);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void ev__cache_put(ev_chain_cache *c, const ev__key_part *key, size_t nkey, const ev__cache_val *v)
{
    if (!c || !key_ok(key, nkey) || v->not_before > v->not_after)
        return;
    cache_entry n = {0};
    n.key_size = key_size(key, nkey);
    n.key = key_new(key, nkey, n.key_size);
    n.not_before = v->not_before;
    n.not_after = v->not_after;
    if (v->chain && !(n.chain = X509_chain_up_ref(v->chain)))
        abort();
    if (v->vctx && !(n.vctx = EVP_PKEY_CTX_dup(v->vctx))) {
        entry_clear(&n);
        return;
    }
    if (v->blob_size) {
        n.blob = xmalloc(v->blob_size);
        memcpy(n.blob, v->blob, v->blob_size);
        n.blob_size = v->blob_size;
    }
    pthread_mutex_lock(&c->lock);
    long i = find(c, key, nkey, n.key_size);
    size_t slot;
    if (i >= 0) {
        slot = (size_t)i;
    } else if (c->count < c->max) {
        slot = c->count++;
    } else {
        slot = c->next;
        c->next = (c->next + 1) % c->max;
    }
    entry_clear(&c->e[slot]);
    c->e[slot] = n;
    pthread_mutex_unlock(&c->lock);
}

/* ---- validity windows ---- */

static bool asn1_time(time_t *out, const ASN1_TIME *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    *out = timegm(&tm);
    return true;
}

bool ev__time_window(time_t *not_before, time_t *not_after, const ASN1_TIME *from,
                     const ASN1_TIME *to)
{
    time_t a, b;
    if (!asn1_time(&a, from) || !asn1_time(&b, to))
        return false;
    /* OpenSSL accepts notBefore <= t and refuses notAfter <= t (X509_cmp_time maps equal to
     * "earlier"): the inclusive window is [from, to - 1] */
    if (a > *not_before)
        *not_before = a;
    if (b - 1 < *not_after)
        *not_after = b - 1;
    return true;
}

bool ev__chain_window(time_t *not_before, time_t *not_after, STACK_OF(X509) * chain)
{
    for (int i = 0; i < sk_X509_num(chain); i++) {
        X509 *x = sk_X509_value(chain, i);
        if (!ev__time_window(not_before, not_after, X509_get0_notBefore(x), X509_get0_notAfter(x)))
            return false;
    }
    return true;
}

/* ---- the leaf-certificate form (snp, nvidia-gpu) ---- */

static bool leaf_key(ev__key_part out[2], uint8_t fp[32], const char *scope, X509 *leaf)
{
    unsigned n = 0;
    if (strlen(scope) >= SCOPE_MAX || X509_digest(leaf, EVP_sha256(), fp, &n) != 1 || n != 32)
        return false;
    out[0] = (ev__key_part){scope, strlen(scope) + 1};
    out[1] = (ev__key_part){fp, 32};
    return true;
}

bool ev__chain_cache_get(STACK_OF(X509) * *out, ev_chain_cache *c, const char *scope, X509 *leaf,
                         time_t now)
{
    ev__key_part k[2];
    uint8_t fp[32];
    if (!c || !leaf_key(k, fp, scope, leaf))
        return false;
    STACK_OF(X509) *chain = NULL;
    if (!ev__cache_get(c, k, 2, now, &chain, NULL, NULL, 0))
        return false;
    if (out)
        *out = chain;
    else
        sk_X509_pop_free(chain, X509_free);
    return true;
}

void ev__chain_cache_put(ev_chain_cache *c, const char *scope, X509 *leaf, STACK_OF(X509) * chain)
{
    ev__key_part k[2];
    uint8_t fp[32];
    ev__cache_val v = {.not_before = INT64_MIN, .not_after = INT64_MAX, .chain = chain};
    if (!c || !chain || sk_X509_num(chain) < 1 || !leaf_key(k, fp, scope, leaf) ||
        !ev__chain_window(&v.not_before, &v.not_after, chain))
        return;
    ev__cache_put(c, k, 2, &v);
}

/* ---- compiled-in certificates, parsed once per process ---- */

#define EMBEDDED_MAX 32

static pthread_mutex_t g_embedded_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const char *pem;
    X509 *cert;
} g_embedded[EMBEDDED_MAX];

int ev__cert_embedded(X509 **out, const char *pem, cista_error **err)
{
    pthread_mutex_lock(&g_embedded_lock);
    for (size_t i = 0; i < EMBEDDED_MAX && g_embedded[i].pem; i++) {
        if (g_embedded[i].pem == pem) {
            X509_up_ref(g_embedded[i].cert);
            *out = g_embedded[i].cert;
            pthread_mutex_unlock(&g_embedded_lock);
            return 0;
        }
    }
    X509 *c = NULL;
    int rc = x509_cert_load(&c, pem, strlen(pem), err);
    if (rc < 0) {
        pthread_mutex_unlock(&g_embedded_lock);
        return rc;
    }
    for (size_t i = 0; i < EMBEDDED_MAX; i++) {
        if (!g_embedded[i].pem) {
            g_embedded[i].pem = pem;
            g_embedded[i].cert = c;
            X509_up_ref(c);
            break;
        }
    }
    pthread_mutex_unlock(&g_embedded_lock);
    *out = c;
    return 0;
}
