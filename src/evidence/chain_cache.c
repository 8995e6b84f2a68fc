/*
 * chain_cache.c - an optional cache of certificate chains that verified
 * (ev_verify_opts.chain_cache), so a verifier that sees the same device
 * certificate again (a KBS appraising one host's evidence every few
 * seconds) does one signature verification over the evidence instead of
 * re-verifying the chain. An entry is keyed by SHA-256 of the leaf's DER
 * and a scope naming the verifier and pinned root ("snp/Milan/vcek"); it
 * holds the verified chain and the intersection of its validity windows,
 * and is used only when "now" lies inside that window. Verifiers bypass it
 * when CRLs are given (revocation may have changed). Bounded; when full the
 * oldest entry is replaced. Thread-safe (one mutex).
 *
 * Also here: ev__cert_embedded(), the compiled-in vendor certificates
 * parsed once per process (constant data, so this global cache is safe to
 * share; it is never freed).
 */
#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evidence/ev.h"
#include "evidence/ev_int.h"
#include "util/util.h"

#define SCOPE_MAX 96 /* ev_int.h promises < 64; dcap uses up to 73 */

typedef struct {
    uint8_t leaf_sha256[32];
    char scope[SCOPE_MAX];
    time_t not_before, not_after; /* intersection over the chain */
    STACK_OF(X509) * chain;       /* owned */
} cache_entry;

struct ev_chain_cache {
    pthread_mutex_t lock;
    size_t max, count, next; /* next: slot replaced when full */
    cache_entry *e;
};

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
        sk_X509_pop_free(c->e[i].chain, X509_free);
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

static bool asn1_time(time_t *out, const ASN1_TIME *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return false;
    *out = timegm(&tm);
    return true;
}

static bool leaf_key(uint8_t out[32], X509 *leaf)
{
    unsigned n = 0;
    return X509_digest(leaf, EVP_sha256(), out, &n) == 1 && n == 32;
}

bool ev__chain_cache_get(STACK_OF(X509) * *out, ev_chain_cache *c, const char *scope, X509 *leaf,
                         time_t now)
{
    uint8_t k[32];
    if (!c || strlen(scope) >= SCOPE_MAX || !leaf_key(k, leaf))
        return false;
    if (!now)
        now = time(NULL);
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->count && !hit; i++) {
        cache_entry *e = &c->e[i];
        if (memcmp(e->leaf_sha256, k, 32) != 0 || strcmp(e->scope, scope) != 0)
            continue;
        if (now < e->not_before || now > e->not_after)
            break; /* outside the window: verify again (and report why) */
        if (out)
            *out = X509_chain_up_ref(e->chain);
        hit = true;
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void ev__chain_cache_put(ev_chain_cache *c, const char *scope, X509 *leaf, STACK_OF(X509) * chain)
{
    cache_entry n = {0};
    if (!c || !chain || sk_X509_num(chain) < 1 || strlen(scope) >= SCOPE_MAX ||
        !leaf_key(n.leaf_sha256, leaf))
        return;
    n.not_before = 0;
    n.not_after = (time_t)INT64_MAX;
    for (int i = 0; i < sk_X509_num(chain); i++) {
        time_t nb, na;
        X509 *x = sk_X509_value(chain, i);
        if (!asn1_time(&nb, X509_get0_notBefore(x)) || !asn1_time(&na, X509_get0_notAfter(x)))
            return;
        if (nb > n.not_before)
            n.not_before = nb;
        if (na < n.not_after)
            n.not_after = na;
    }
    snprintf(n.scope, sizeof(n.scope), "%s", scope);
    n.chain = X509_chain_up_ref(chain);
    if (!n.chain)
        abort();
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->count; i++) {
        if (memcmp(c->e[i].leaf_sha256, n.leaf_sha256, 32) == 0 &&
            strcmp(c->e[i].scope, n.scope) == 0) {
            sk_X509_pop_free(c->e[i].chain, X509_free);
            c->e[i] = n;
            pthread_mutex_unlock(&c->lock);
            return;
        }
    }
    size_t slot;
    if (c->count < c->max) {
        slot = c->count++;
    } else {
        slot = c->next;
        c->next = (c->next + 1) % c->max;
        sk_X509_pop_free(c->e[slot].chain, X509_free);
    }
    c->e[slot] = n;
    pthread_mutex_unlock(&c->lock);
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
