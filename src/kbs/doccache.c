/*
 * doccache.c - cache of release policies, reference values and sealed
 * resource values (see kbs_int.h), so /attest and /resource do not re-read
 * them from the store on every request. Misses (-ENOENT) are cached too: a
 * release looks up to four policy keys, and most do not exist. A resource is
 * kept as stored, encrypted under the master key: the caller decrypts it per
 * release, so no plaintext stays here.
 *
 * Freshness: an admin write through this process calls
 * kbs__doc_cache_invalidate() after its store write, and a read that raced
 * with that write does not insert its (possibly old) value (generation
 * check). Writes by another process — another PostgreSQL replica — become
 * visible when an entry's TTL runs out (KBS_DOC_CACHE_TTL_MS).
 *
 * Release policies and reference values are also kept parsed, keyed by their kind and exact
 * text: a parsed form is the text's own meaning, so it can never be stale and needs no TTL;
 * invalidation drops those no longer in use only to bound memory. Readers hold a reference
 * (kbs_parsed_ref) while they use one, so an invalidation never frees it under them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kbs/kbs_int.h"
#include "policy/appraisal.h"
#include "util/util.h"

#define DOC_CACHE_MAX 1024
/* A release looks up to five keys: hashed, so a full cache costs what an empty one does. */
#define DOC_CACHE_BUCKETS 1024
#define PARSED_CACHE_MAX 256

/* Sealed resource values larger than this are read from the store every time. */
#define SEALED_CACHE_VALUE_MAX (64 * 1024)
/* Bytes of values held at most: past it the cache starts over. */
#define DOC_CACHE_BYTES_MAX (16 * 1024 * 1024)

typedef struct doc_entry {
    struct doc_entry *next;
    char *ns, *key;
    uint8_t *value; /* NULL: the document or resource does not exist */
    size_t size;
    int64_t loaded_ms;
} doc_entry;

typedef enum { PARSED_RELEASE, PARSED_REFVALS } parsed_kind;

struct kbs_parsed_ref {
    kbs_parsed_ref *next;
    parsed_kind kind;
    uint64_t hash;
    char *text;
    size_t len;
    void *obj;     /* pol_release or pol_refvals, by @kind */
    unsigned refs; /* the cache's list holds one while linked; atomic */
};

struct kbs_doc_cache {
    pthread_mutex_t mu;
    doc_entry *buckets[DOC_CACHE_BUCKETS];
    size_t count, bytes;
    kbs_parsed_ref *parsed;
    size_t parsed_count;
    uint64_t gen;
    int64_t ttl_ms;
    uint64_t hits, misses;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

kbs_doc_cache *kbs__doc_cache_new(int64_t ttl_ms)
{
    kbs_doc_cache *dc = xzalloc(sizeof(*dc));
    pthread_mutex_init(&dc->mu, NULL);
    dc->ttl_ms = ttl_ms;
    return dc;
}

static void drop_all(kbs_doc_cache *dc)
{
    for (size_t i = 0; i < DOC_CACHE_BUCKETS && dc->count; i++) {
        doc_entry *e = dc->buckets[i];
        while (e) {
            doc_entry *n = e->next;
            free(e->ns);
            free(e->key);
            free(e->value);
            free(e);
            dc->count--;
            e = n;
        }
        dc->buckets[i] = NULL;
    }
    dc->count = 0;
    dc->bytes = 0;
}

static void parsed_free(kbs_parsed_ref *ref)
{
    if (ref->kind == PARSED_RELEASE)
        pol_release_free(ref->obj);
    else
        pol_refvals_free(ref->obj);
    free(ref->text);
    free(ref);
}

void kbs__parsed_ref_put(kbs_parsed_ref *ref)
{
    if (ref && __atomic_sub_fetch(&ref->refs, 1, __ATOMIC_ACQ_REL) == 0)
        parsed_free(ref);
}

static void drop_parsed(kbs_doc_cache *dc)
{
    kbs_parsed_ref *p = dc->parsed;
    while (p) {
        kbs_parsed_ref *n = p->next;
        kbs__parsed_ref_put(p);
        p = n;
    }
    dc->parsed = NULL;
    dc->parsed_count = 0;
}

void kbs__doc_cache_free(kbs_doc_cache *dc)
{
    if (!dc)
        return;
    drop_all(dc);
    drop_parsed(dc);
    pthread_mutex_destroy(&dc->mu);
    free(dc);
}

void kbs__doc_cache_invalidate(kbs_doc_cache *dc)
{
    pthread_mutex_lock(&dc->mu);
    dc->gen++;
    drop_all(dc);
    drop_parsed(dc);
    pthread_mutex_unlock(&dc->mu);
}

/* FNV-1a: the keys are our own resource paths and policy keys; a collision costs a comparison. */
static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

#define FNV_BASIS 1469598103934665603ull

static doc_entry **bucket(kbs_doc_cache *dc, const char *ns, const char *key)
{
    uint64_t h = fnv1a(fnv1a(FNV_BASIS, ns, strlen(ns) + 1), key, strlen(key));
    return &dc->buckets[h % DOC_CACHE_BUCKETS];
}

static doc_entry **lookup(kbs_doc_cache *dc, const char *ns, const char *key)
{
    for (doc_entry **p = bucket(dc, ns, key); *p; p = &(*p)->next)
        if (!strcmp((*p)->key, key) && !strcmp((*p)->ns, ns))
            return p;
    return NULL;
}

static uint8_t *memdup(const uint8_t *p, size_t n)
{
    uint8_t *d = xmalloc(n ? n : 1);
    memcpy(d, p, n);
    return d;
}

/* Reads the value behind (@ns, @key): a document's text (NUL counted in *out_size) or a sealed
 * resource. */
typedef int (*doc_loader)(kbs_store *st, uint8_t **out, size_t *out_size, const char *ns,
                          const char *key, cista_error **err);

/* A copy of the fresh entry for (@ns, @key) into *out (1), its miss (-ENOENT), or 0: none. */
static int cached(kbs_doc_cache *dc, uint8_t **out, size_t *out_size, const char *ns,
                  const char *key, int64_t now, cista_error **err)
{
    doc_entry **p = lookup(dc, ns, key);
    if (!p || now - (*p)->loaded_ms >= dc->ttl_ms)
        return 0;
    dc->hits++;
    if (!(*p)->value)
        return err_set(err, -ENOENT, "%s %s does not exist", ns, key);
    *out = memdup((*p)->value, (*p)->size);
    *out_size = (*p)->size;
    return 1;
}

/* Keep what was read (@value NULL: missing) unless an admin write happened since @gen. */
static void insert(kbs_doc_cache *dc, uint64_t gen, const char *ns, const char *key,
                   const uint8_t *value, size_t size, int64_t now)
{
    if (dc->gen != gen) /* an admin write since the read began */
        return;
    doc_entry **p = lookup(dc, ns, key);
    doc_entry *e = p ? *p : NULL;
    if (!e) {
        if (dc->count >= DOC_CACHE_MAX || dc->bytes + size > DOC_CACHE_BYTES_MAX)
            drop_all(dc);
        e = xzalloc(sizeof(*e));
        e->ns = xstrdup(ns);
        e->key = xstrdup(key);
        doc_entry **b = bucket(dc, ns, key);
        e->next = *b;
        *b = e;
        dc->count++;
    }
    dc->bytes -= e->size;
    free(e->value);
    e->value = value ? memdup(value, size) : NULL;
    e->size = value ? size : 0;
    dc->bytes += e->size;
    e->loaded_ms = now;
}

static int cache_get(kbs_doc_cache *dc, kbs_store *st, doc_loader load, size_t max_size,
                     uint8_t **out, size_t *out_size, const char *ns, const char *key,
                     cista_error **err)
{
    int64_t now = mono_ms();
    pthread_mutex_lock(&dc->mu);
    int r = cached(dc, out, out_size, ns, key, now, err);
    uint64_t gen = dc->gen;
    if (r == 0)
        dc->misses++;
    pthread_mutex_unlock(&dc->mu);
    if (r != 0)
        return r < 0 ? r : 0;

    uint8_t *value = NULL;
    size_t size = 0;
    r = load(st, &value, &size, ns, key, err);
    if (r < 0 && r != -ENOENT)
        return r; /* a storage error is not cached */
    if (size <= max_size) {
        pthread_mutex_lock(&dc->mu);
        insert(dc, gen, ns, key, value, size, now);
        pthread_mutex_unlock(&dc->mu);
    }
    if (r == 0) {
        *out = value;
        *out_size = size;
    }
    return r;
}

static int load_doc(kbs_store *st, uint8_t **out, size_t *out_size, const char *ns, const char *key,
                    cista_error **err)
{
    char *text = NULL;
    int r = kbs_store_get_doc(st, &text, ns, key, err);
    if (r == 0) {
        *out = (uint8_t *)text;
        *out_size = strlen(text) + 1;
    }
    return r;
}

int kbs__doc_cache_get(kbs_doc_cache *dc, kbs_store *st, char **out, const char *ns,
                       const char *key, cista_error **err)
{
    uint8_t *text = NULL;
    size_t size = 0;
    int r = cache_get(dc, st, load_doc, SIZE_MAX, &text, &size, ns, key, err);
    if (r == 0)
        *out = (char *)text;
    return r;
}

static int load_sealed(kbs_store *st, uint8_t **out, size_t *out_size, const char *ns,
                       const char *key, cista_error **err)
{
    (void)ns;
    return kbs_store_get_sealed(st, out, out_size, key, err);
}

int kbs__doc_cache_get_sealed(kbs_doc_cache *dc, kbs_store *st, uint8_t **out, size_t *out_size,
                              const char *path, cista_error **err)
{
    return cache_get(dc, st, load_sealed, SEALED_CACHE_VALUE_MAX, out, out_size, "resource", path,
                     err);
}

/* A new reference to the cached parse of @text (@kind, len @len, hash @h), or NULL. Under mu. */
static kbs_parsed_ref *parsed_find(kbs_doc_cache *dc, parsed_kind kind, const char *text,
                                   size_t len, uint64_t h)
{
    for (kbs_parsed_ref *p = dc->parsed; p; p = p->next) {
        if (p->hash == h && p->kind == kind && p->len == len && !memcmp(p->text, text, len)) {
            __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
            return p;
        }
    }
    return NULL;
}

static int parse(void **out, parsed_kind kind, const char *text, size_t len, cista_error **err)
{
    if (kind == PARSED_RELEASE)
        return pol_release_parse((pol_release **)out, text, len, err);
    return pol_refvals_parse((pol_refvals **)out, text, len, err);
}

static int get_parsed(kbs_doc_cache *dc, kbs_parsed_ref **out, parsed_kind kind, const char *text,
                      cista_error **err)
{
    size_t len = strlen(text);
    uint64_t h = fnv1a(FNV_BASIS, text, len);
    pthread_mutex_lock(&dc->mu);
    *out = parsed_find(dc, kind, text, len, h);
    pthread_mutex_unlock(&dc->mu);
    if (*out)
        return 0;
    void *obj = NULL;
    int r = parse(&obj, kind, text, len, err);
    if (r < 0)
        return r; /* not cached: an unusable document is reported, with its reason, every time */
    kbs_parsed_ref *ref = xzalloc(sizeof(*ref));
    *ref = (kbs_parsed_ref){.kind = kind,
                            .hash = h,
                            .text = xstrndup(text, len),
                            .len = len,
                            .obj = obj,
                            .refs = 2 /* the caller's and the list's */};
    pthread_mutex_lock(&dc->mu);
    /* another reader may have parsed the same text meanwhile: keep one copy */
    *out = parsed_find(dc, kind, text, len, h);
    if (!*out) {
        if (dc->parsed_count >= PARSED_CACHE_MAX)
            drop_parsed(dc);
        ref->next = dc->parsed;
        dc->parsed = ref;
        dc->parsed_count++;
        *out = steal_ptr(&ref);
    }
    pthread_mutex_unlock(&dc->mu);
    if (ref)
        parsed_free(ref);
    return 0;
}

int kbs__doc_cache_policy(kbs_doc_cache *dc, kbs_parsed_ref **out, const char *text,
                          cista_error **err)
{
    return get_parsed(dc, out, PARSED_RELEASE, text, err);
}

int kbs__doc_cache_refvals(kbs_doc_cache *dc, kbs_parsed_ref **out, const char *text,
                           cista_error **err)
{
    return get_parsed(dc, out, PARSED_REFVALS, text, err);
}

const pol_release *kbs__parsed_policy(const kbs_parsed_ref *ref)
{
    return ref->kind == PARSED_RELEASE ? ref->obj : NULL;
}

const pol_refvals *kbs__parsed_refvals(const kbs_parsed_ref *ref)
{
    return ref->kind == PARSED_REFVALS ? ref->obj : NULL;
}

void kbs__doc_cache_stats(kbs_doc_cache *dc, uint64_t *out_hits, uint64_t *out_misses)
{
    pthread_mutex_lock(&dc->mu);
    *out_hits = dc->hits;
    *out_misses = dc->misses;
    pthread_mutex_unlock(&dc->mu);
}
