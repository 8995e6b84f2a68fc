/*
 * session.c - the bounded in-memory RCAR session table (see kbs.h).
 *
 * Open hashing over a fixed bucket array sized from the bound, one mutex.
 * An idle (challenged) session costs one kbs_session plus a next pointer;
 * the attestation token is only held once the session is attested. Every
 * add also drops the expired entries of the next few buckets (a cursor
 * walks the table), so under a steady rate of attestations expired
 * sessions, and the tokens they hold, go within about one lifetime instead
 * of piling up until the table is full; when it is full anyway, all
 * expired sessions are swept, and then the oldest session still waiting for
 * its /attest (challenged) gives way: a flood of /auth calls can neither
 * grow memory past the bound nor lock guests out for a nonce lifetime, and
 * never evicts an attested session. Challenged sessions are kept in
 * creation order (a list through the entries) so that costs O(1).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/jws.h"
#include "kbs/kbs.h"
#include "util/util.h"

typedef struct entry entry;
struct entry {
    entry *next;
    entry *cprev, *cnext; /* the challenged list, while s.state is CHALLENGED */
    kbs_session s;
};

struct kbs_sessions {
    pthread_mutex_t lock;
    entry **buckets;
    size_t nbuckets;
    size_t count;
    size_t max;
    size_t cursor;        /* next bucket sweep_some() looks at */
    entry *chead, *ctail; /* challenged sessions, oldest first */
};

static void challenged_unlink(kbs_sessions *t, entry *e)
{
    if (e->s.state != KBS_SESSION_CHALLENGED)
        return;
    *(e->cprev ? &e->cprev->cnext : &t->chead) = e->cnext;
    *(e->cnext ? &e->cnext->cprev : &t->ctail) = e->cprev;
    e->cprev = e->cnext = NULL;
}

/* Unlink @e (at *pp in its bucket) from everything and free it. */
static void entry_remove(kbs_sessions *t, entry **pp)
{
    entry *e = *pp;
    *pp = e->next;
    challenged_unlink(t, e);
    kbs_session_clear(&e->s);
    free(e);
    t->count--;
}

/* Buckets sweep_some() checks per add: the table (max buckets) is walked once per max / 4 adds. */
#define SWEEP_PER_ADD 4

size_t kbs_sessions_idle_bytes(void)
{
    /* The entry plus its share of the bucket array (one pointer per slot). */
    return sizeof(entry) + sizeof(entry *);
}

static uint64_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a; ids are random, no keyed hash needed */
    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 1099511628211ull;
    return h;
}

kbs_sessions *kbs_sessions_new(size_t max)
{
    kbs_sessions *t = xzalloc(sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    t->max = max ? max : 1;
    t->nbuckets = t->max < 16 ? 16 : t->max;
    t->buckets = xzalloc(t->nbuckets * sizeof(entry *));
    return t;
}

void kbs_held_token_free(kbs_held_token *h)
{
    if (h)
        crypto_free_secret(h, sizeof(*h) + h->payload_size + 1);
}

static kbs_held_token *held_dup(const kbs_held_token *h)
{
    if (!h)
        return NULL;
    size_t n = sizeof(*h) + h->payload_size + 1;
    return memcpy(xmalloc(n), h, n);
}

static EVP_PKEY *key_ref(EVP_PKEY *k)
{
    if (k && EVP_PKEY_up_ref(k) != 1)
        abort();
    return k;
}

void kbs_session_clear(kbs_session *s)
{
    if (s->token)
        crypto_free_secret(s->token, strlen(s->token));
    kbs_held_token_free(s->held);
    EVP_PKEY_free(s->tee_key);
    crypto_cleanse(s, sizeof(*s));
}

static void entry_free(entry *e)
{
    kbs_session_clear(&e->s);
    free(e);
}

void kbs_sessions_free(kbs_sessions *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        entry *e = t->buckets[i];
        while (e) {
            entry *n = e->next;
            entry_free(e);
            e = n;
        }
    }
    free(t->buckets);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* Caller holds the lock. Drop the expired entries of bucket @i. */
static void sweep_bucket(kbs_sessions *t, size_t i, time_t now)
{
    entry **pp = &t->buckets[i];
    while (*pp) {
        if ((*pp)->s.expires <= now)
            entry_remove(t, pp);
        else
            pp = &(*pp)->next;
    }
}

static void sweep(kbs_sessions *t, time_t now)
{
    for (size_t i = 0; i < t->nbuckets; i++)
        sweep_bucket(t, i, now);
}

static void sweep_some(kbs_sessions *t, time_t now)
{
    for (size_t k = 0; k < SWEEP_PER_ADD; k++) {
        sweep_bucket(t, t->cursor, now);
        t->cursor = (t->cursor + 1) % t->nbuckets;
    }
}

/* Caller holds the lock. Constant-time comparison of the (secret) id. */
static entry **lookup(kbs_sessions *t, const char *id);

/* Drop the oldest challenged session; false when there is none (all attested or in use). */
static bool evict_challenged(kbs_sessions *t)
{
    entry *e = t->chead;
    if (!e)
        return false;
    entry **pp = lookup(t, e->s.id);
    if (!pp)
        return false;
    entry_remove(t, pp);
    return true;
}

static entry **lookup(kbs_sessions *t, const char *id)
{
    if (strlen(id) != KBS_SESSION_ID_LEN)
        return NULL;
    entry **pp = &t->buckets[hash_id(id) % t->nbuckets];
    for (; *pp; pp = &(*pp)->next)
        if (crypto_memeq((*pp)->s.id, id, KBS_SESSION_ID_LEN))
            return pp;
    return NULL;
}

int kbs_sessions_add(kbs_sessions *t, const kbs_session *s, time_t now, cista_error **err)
{
    if (strlen(s->id) != KBS_SESSION_ID_LEN)
        return err_set(err, -EINVAL, "session id must be %d characters", KBS_SESSION_ID_LEN);
    pthread_mutex_lock(&t->lock);
    sweep_some(t, now);
    if (t->count >= t->max)
        sweep(t, now);
    if (t->count >= t->max && s->state == KBS_SESSION_CHALLENGED)
        evict_challenged(t);
    if (t->count >= t->max) {
        size_t max = t->max;
        pthread_mutex_unlock(&t->lock);
        return err_set(err, -EBUSY,
                       "the session table is full (%zu live sessions); retry later or raise "
                       "sessions.max",
                       max);
    }
    entry *e = xzalloc(sizeof(*e));
    e->s = *s;
    e->s.token = s->token ? xstrdup(s->token) : NULL;
    e->s.held = held_dup(s->held);
    e->s.tee_key = key_ref(s->tee_key);
    entry **b = &t->buckets[hash_id(s->id) % t->nbuckets];
    e->next = *b;
    *b = e;
    t->count++;
    if (e->s.state == KBS_SESSION_CHALLENGED) {
        e->cprev = t->ctail;
        *(t->ctail ? &t->ctail->cnext : &t->chead) = e;
        t->ctail = e;
    }
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int kbs_sessions_find(kbs_sessions *t, kbs_session *out, const char *id, time_t now)
{
    pthread_mutex_lock(&t->lock);
    entry **pp = lookup(t, id);
    int r = 0;
    if (!pp) {
        r = -ENOENT;
    } else if ((*pp)->s.expires <= now) {
        entry_remove(t, pp);
        r = -ETIMEDOUT;
    } else {
        *out = (*pp)->s;
        out->token = (*pp)->s.token ? xstrdup((*pp)->s.token) : NULL;
        out->held = held_dup((*pp)->s.held);
        out->tee_key = key_ref((*pp)->s.tee_key);
    }
    pthread_mutex_unlock(&t->lock);
    return r;
}

int kbs_sessions_consume(kbs_sessions *t, const char *id, time_t now)
{
    pthread_mutex_lock(&t->lock);
    entry **pp = lookup(t, id);
    int r = 0;
    if (!pp)
        r = -ENOENT;
    else if ((*pp)->s.expires <= now)
        r = -ETIMEDOUT;
    else if ((*pp)->s.state != KBS_SESSION_CHALLENGED)
        r = -EALREADY;
    else {
        challenged_unlink(t, *pp);
        (*pp)->s.state = KBS_SESSION_USED;
    }
    pthread_mutex_unlock(&t->lock);
    return r;
}

int kbs_sessions_set_token(kbs_sessions *t, const char *id, const char *token, EVP_PKEY *tee_key,
                           time_t expires)
{
    uint8_t *payload = NULL;
    size_t psize = 0;
    if (jws_peek_payload(&payload, &psize, token, strlen(token), NULL) < 0)
        return -EINVAL;
    kbs_held_token *held = xmalloc(sizeof(*held) + psize + 1);
    held->payload_size = psize;
    memcpy(held->payload_json, payload, psize);
    held->payload_json[psize] = '\0';
    crypto_free_secret(payload, psize);
    crypto_hash_oneshot(CRYPTO_SHA256, token, strlen(token), held->token_sha256);
    pthread_mutex_lock(&t->lock);
    entry **pp = lookup(t, id);
    int r = 0;
    if (!pp) {
        r = -ENOENT;
    } else {
        entry *e = *pp;
        challenged_unlink(t, e);
        if (e->s.token)
            crypto_free_secret(e->s.token, strlen(e->s.token));
        e->s.token = NULL;
        kbs_held_token_free(e->s.held);
        e->s.held = steal_ptr(&held);
        EVP_PKEY_free(e->s.tee_key);
        e->s.tee_key = key_ref(tee_key);
        e->s.state = KBS_SESSION_ATTESTED;
        e->s.expires = expires;
    }
    pthread_mutex_unlock(&t->lock);
    kbs_held_token_free(held);
    return r;
}

size_t kbs_sessions_count(kbs_sessions *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}
