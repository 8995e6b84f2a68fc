/*
 * doccache.c - cache of release policies and reference values (see
 * kbs_int.h), so /attest and /resource do not re-read them from the store on
 * every request. Misses (-ENOENT) are cached too: a release looks up to four
 * policy keys, and most do not exist.
 *
 * Freshness: an admin write through this process calls
 * kbs__doc_cache_invalidate() after its store write, and a read that raced
 * with that write does not insert its (possibly old) value (generation
 * check). Writes by another process — another PostgreSQL replica — become
 * visible when an entry's TTL runs out (KBS_DOC_CACHE_TTL_MS).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kbs/kbs_int.h"
#include "util/util.h"

#define DOC_CACHE_MAX 1024

typedef struct doc_entry {
    struct doc_entry *next;
    char *ns, *key;
    char *text; /* NULL: the document does not exist */
    int64_t loaded_ms;
} doc_entry;

struct kbs_doc_cache {
    pthread_mutex_t mu;
    doc_entry *head;
    size_t count;
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
    doc_entry *e = dc->head;
    while (e) {
        doc_entry *n = e->next;
        free(e->ns);
        free(e->key);
        free(e->text);
        free(e);
        e = n;
    }
    dc->head = NULL;
    dc->count = 0;
}

void kbs__doc_cache_free(kbs_doc_cache *dc)
{
    if (!dc)
        return;
    drop_all(dc);
    pthread_mutex_destroy(&dc->mu);
    free(dc);
}

void kbs__doc_cache_invalidate(kbs_doc_cache *dc)
{
    pthread_mutex_lock(&dc->mu);
    dc->gen++;
    drop_all(dc);
    pthread_mutex_unlock(&dc->mu);
}

static doc_entry **lookup(kbs_doc_cache *dc, const char *ns, const char *key)
{
    for (doc_entry **p = &dc->head; *p; p = &(*p)->next)
        if (!strcmp((*p)->key, key) && !strcmp((*p)->ns, ns))
            return p;
    return NULL;
}

int kbs__doc_cache_get(kbs_doc_cache *dc, kbs_store *st, char **out, const char *ns,
                       const char *key, cista_error **err)
{
    int64_t now = mono_ms();
    pthread_mutex_lock(&dc->mu);
    doc_entry **p = lookup(dc, ns, key);
    if (p && now - (*p)->loaded_ms < dc->ttl_ms) {
        doc_entry *e = *p;
        int r = 0;
        if (e->text)
            *out = xstrdup(e->text);
        else
            r = err_set(err, -ENOENT, "%s %s does not exist", ns, key);
        dc->hits++;
        pthread_mutex_unlock(&dc->mu);
        return r;
    }
    uint64_t gen = dc->gen;
    dc->misses++;
    pthread_mutex_unlock(&dc->mu);

    char *text = NULL;
    int r = kbs_store_get_doc(st, &text, ns, key, err);
    if (r < 0 && r != -ENOENT)
        return r; /* a storage error is not cached */
    pthread_mutex_lock(&dc->mu);
    if (dc->gen == gen) { /* no admin write since the read began */
        p = lookup(dc, ns, key);
        doc_entry *e = p ? *p : NULL;
        if (!e) {
            if (dc->count >= DOC_CACHE_MAX)
                drop_all(dc);
            e = xzalloc(sizeof(*e));
            e->ns = xstrdup(ns);
            e->key = xstrdup(key);
            e->next = dc->head;
            dc->head = e;
            dc->count++;
        }
        free(e->text);
        e->text = text ? xstrdup(text) : NULL;
        e->loaded_ms = now;
    }
    pthread_mutex_unlock(&dc->mu);
    if (r == 0)
        *out = text;
    return r;
}

void kbs__doc_cache_stats(kbs_doc_cache *dc, uint64_t *out_hits, uint64_t *out_misses)
{
    pthread_mutex_lock(&dc->mu);
    *out_hits = dc->hits;
    *out_misses = dc->misses;
    pthread_mutex_unlock(&dc->mu);
}
