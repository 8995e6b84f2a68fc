/*
 * peers.c - the KBS's per-peer connection and handshake limits (see
 * peers.h).
 *
 * A fixed pool of entries, handed out in order until it is used up, chained
 * in a power-of-two bucket array by keyed hash. Peers with no open
 * connection are kept on an idle list, least recently seen first: when the
 * pool is used up, the head of that list is reused, so both the lookup and
 * the eviction cost O(1) and a peer holding a connection is never evicted
 * (its count must meet its release). Handshake tokens are kept in
 * thousandths so a refill at any rate from 1/s is exact per millisecond.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "kbs/peers.h"
#include "util/util.h"

typedef struct entry entry;
struct entry {
    kbs_peer_addr addr;
    entry *next;          /* hash chain */
    entry *iprev, *inext; /* the idle list, while conns == 0 */
    uint32_t conns;
    uint64_t tokens;    /* handshake tokens × 1000 */
    uint64_t refill_ms; /* when @tokens was last refilled */
    uint64_t next_log_ms;
    uint64_t refused; /* refusals since the peer's last log line */
};

struct kbs_peers {
    pthread_mutex_t lock;
    kbs_peers_limits lim;
    EVP_MAC_CTX *mac; /* SipHash-2-4, 64-bit, keyed with random bytes; duplicated per hash */
    entry *pool;
    size_t max, used;
    entry **buckets;
    size_t mask;
    entry *ihead, *itail; /* idle peers, least recently seen first */
    size_t count, conns;
    uint64_t refused_conns, refused_rate, uncounted;
    /* the log budget: KBS_PEERS_LOG_LINES peer lines per interval from @win_start_ms */
    uint64_t win_start_ms;
    unsigned win_lines;
    bool win_flood;
    uint64_t next_full_log_ms;
};

/* ---- addresses ---- */

static const uint8_t g_v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool kbs_peer_addr_from_sockaddr(kbs_peer_addr *out, const struct sockaddr *sa, socklen_t len)
{
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(out->a, g_v4mapped, 12);
        memcpy(out->a + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        /* an IPv4 client of a dual-stack socket arrives IPv4-mapped: already the same key */
        memcpy(out->a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

static bool is_v4(const kbs_peer_addr *a)
{
    return !memcmp(a->a, g_v4mapped, 12);
}

void kbs_peer_addr_mask(kbs_peer_addr *a, unsigned v6_prefix)
{
    if (is_v4(a) || v6_prefix >= 128)
        return;
    unsigned whole = v6_prefix / 8, bits = v6_prefix % 8;
    if (bits)
        a->a[whole++] &= (uint8_t)(0xff00u >> bits);
    memset(a->a + whole, 0, 16 - whole);
}

void kbs_peer_addr_format(char out[KBS_PEER_ADDR_STRLEN], const kbs_peer_addr *a,
                          unsigned v6_prefix)
{
    bool v4 = is_v4(a);
    if (!inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? a->a + 12 : a->a, out, INET6_ADDRSTRLEN)) {
        strcpy(out, "?");
        return;
    }
    if (!v4 && v6_prefix < 128)
        snprintf(out + strlen(out), KBS_PEER_ADDR_STRLEN - strlen(out), "/%u", v6_prefix);
}

/* ---- the table ---- */

int kbs_peers_new(kbs_peers **out, const kbs_peers_limits *lim, size_t max_entries,
                  cista_error **err)
{
    if (max_entries < 1 || max_entries > (1u << 24))
        return err_set(err, -EINVAL, "peer table: %zu entries, expected 1..%u", max_entries,
                       1u << 24);
    kbs_peers *t = xzalloc(sizeof(*t));
    uint8_t key[16];
    int r = crypto_random(key, sizeof(key), err);
    if (r < 0) {
        free(t);
        return err_wrap(err, "peer table hash key");
    }
    EVP_MAC *sip = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    t->mac = sip ? EVP_MAC_CTX_new(sip) : NULL;
    EVP_MAC_free(sip);
    size_t hsize = 8;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &hsize),
                           OSSL_PARAM_construct_end()};
    if (!t->mac || EVP_MAC_init(t->mac, key, sizeof(key), params) != 1) {
        crypto_cleanse(key, sizeof(key));
        EVP_MAC_CTX_free(t->mac);
        free(t);
        return err_set_ssl(err, -ENOSYS, "peer table: OpenSSL's SipHash is not available");
    }
    crypto_cleanse(key, sizeof(key));
    pthread_mutex_init(&t->lock, NULL);
    t->lim = *lim;
    if (t->lim.hs_burst < 1)
        t->lim.hs_burst = 1;
    t->max = max_entries;
    t->pool = xzalloc(max_entries * sizeof(entry));
    size_t nb = 1;
    while (nb < max_entries)
        nb <<= 1;
    t->buckets = xzalloc(nb * sizeof(entry *));
    t->mask = nb - 1;
    *out = t;
    return 0;
}

void kbs_peers_free(kbs_peers *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
    EVP_MAC_CTX_free(t->mac);
    free(t->buckets);
    free(t->pool);
    free(t);
}

uint64_t kbs__peers_hash(kbs_peers *t, const kbs_peer_addr *a)
{
    /* A copy of the keyed context per address: ~0.3 us, once per handshake. Out of memory, the
     * address goes to bucket 0 (slower lookups, still correct). */
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(t->mac);
    uint8_t out[8] = {0};
    size_t n = 0;
    if (!c || EVP_MAC_update(c, a->a, sizeof(a->a)) != 1 ||
        EVP_MAC_final(c, out, &n, sizeof(out)) != 1)
        memset(out, 0, sizeof(out));
    EVP_MAC_CTX_free(c);
    uint64_t h;
    memcpy(&h, out, sizeof(h));
    return h;
}

static entry **bucket_of(kbs_peers *t, const kbs_peer_addr *a)
{
    return &t->buckets[kbs__peers_hash(t, a) & t->mask];
}

/* The entry of @a, or NULL; *out_pp (may be NULL) gets the link that points at it. */
static entry *find(kbs_peers *t, entry ***out_pp, const kbs_peer_addr *a)
{
    entry **pp = bucket_of(t, a);
    while (*pp && memcmp((*pp)->addr.a, a->a, sizeof(a->a)))
        pp = &(*pp)->next;
    if (out_pp)
        *out_pp = pp;
    return *pp;
}

static void idle_unlink(kbs_peers *t, entry *e)
{
    *(e->iprev ? &e->iprev->inext : &t->ihead) = e->inext;
    *(e->inext ? &e->inext->iprev : &t->itail) = e->iprev;
    e->iprev = e->inext = NULL;
}

static void idle_append(kbs_peers *t, entry *e)
{
    e->iprev = t->itail;
    e->inext = NULL;
    *(t->itail ? &t->itail->inext : &t->ihead) = e;
    t->itail = e;
}

/* A fresh entry for a new peer: an unused one, else the peer idle the longest; NULL when every
 * tracked peer holds a connection. */
static entry *entry_take(kbs_peers *t)
{
    if (t->used < t->max) {
        t->count++;
        return &t->pool[t->used++];
    }
    entry *e = t->ihead;
    if (!e)
        return NULL;
    idle_unlink(t, e);
    entry **pp = NULL;
    find(t, &pp, &e->addr);
    *pp = e->next;
    return e;
}

static void refill(const kbs_peers *t, entry *e, uint64_t now_ms)
{
    uint64_t cap = (uint64_t)t->lim.hs_burst * 1000;
    if (now_ms <= e->refill_ms)
        return;
    uint64_t dt = now_ms - e->refill_ms;
    /* dt ms at r tokens/s is dt * r thousandths; dt >= cap refills it whatever r (>= 1) is */
    uint64_t add = dt >= cap ? cap : dt * t->lim.hs_per_s;
    e->tokens = cap - e->tokens <= add ? cap : e->tokens + add;
    e->refill_ms = now_ms;
}

static void note_refusal(kbs_peers *t, kbs_peers_note *note, entry *e, uint64_t now_ms)
{
    e->refused++;
    if (now_ms - t->win_start_ms >= KBS_PEERS_LOG_INTERVAL_MS) {
        t->win_start_ms = now_ms;
        t->win_lines = 0;
        t->win_flood = false;
    }
    if (now_ms < e->next_log_ms)
        return; /* counted in e->refused, reported with the peer's next line */
    if (t->win_lines < KBS_PEERS_LOG_LINES) {
        t->win_lines++;
        note->log_peer = true;
        note->peer_refused = e->refused;
        note->peer_conns = e->conns;
        e->refused = 0;
        e->next_log_ms = now_ms + KBS_PEERS_LOG_INTERVAL_MS;
    } else if (!t->win_flood) {
        t->win_flood = true;
        note->log_flood = true;
    }
}

kbs_peers_verdict kbs_peers_admit(kbs_peers *t, kbs_peers_note *out_note, const kbs_peer_addr *a,
                                  uint64_t now_ms)
{
    kbs_peers_note dummy;
    kbs_peers_note *note = out_note ? out_note : &dummy;
    memset(note, 0, sizeof(*note));
    kbs_peers_verdict v;
    pthread_mutex_lock(&t->lock);
    entry *e = find(t, NULL, a);
    if (!e) {
        e = entry_take(t);
        if (!e) {
            t->uncounted++;
            if (now_ms >= t->next_full_log_ms) {
                note->log_full = true;
                t->next_full_log_ms = now_ms + KBS_PEERS_LOG_INTERVAL_MS;
            }
            pthread_mutex_unlock(&t->lock);
            return KBS_PEERS_ADMIT_UNCOUNTED;
        }
        *e = (entry){.addr = *a, .tokens = (uint64_t)t->lim.hs_burst * 1000, .refill_ms = now_ms};
        entry **pp = bucket_of(t, a);
        e->next = *pp;
        *pp = e;
        idle_append(t, e);
    } else if (e->conns == 0) {
        idle_unlink(t, e); /* seen now: the last of the idle peers to be evicted */
        idle_append(t, e);
    }
    /* a refusal for connections takes no token: it costs the server no handshake */
    bool over_conns = t->lim.conns_max && e->conns >= t->lim.conns_max;
    if (!over_conns && t->lim.hs_per_s)
        refill(t, e, now_ms);
    if (over_conns) {
        v = KBS_PEERS_REFUSE_CONNS;
        t->refused_conns++;
    } else if (t->lim.hs_per_s && e->tokens < 1000) {
        v = KBS_PEERS_REFUSE_RATE;
        t->refused_rate++;
    } else {
        v = KBS_PEERS_ADMIT;
        if (t->lim.hs_per_s)
            e->tokens -= 1000;
        if (e->conns++ == 0)
            idle_unlink(t, e);
        t->conns++;
    }
    if (v != KBS_PEERS_ADMIT) {
        note_refusal(t, note, e, now_ms);
        note->refused_total = t->refused_conns + t->refused_rate;
    }
    pthread_mutex_unlock(&t->lock);
    return v;
}

void kbs_peers_release(kbs_peers *t, const kbs_peer_addr *a)
{
    pthread_mutex_lock(&t->lock);
    entry *e = find(t, NULL, a);
    /* a counted peer is never evicted, so @e is there unless the caller released twice */
    if (e && e->conns > 0) {
        if (--e->conns == 0)
            idle_append(t, e);
        t->conns--;
    }
    pthread_mutex_unlock(&t->lock);
}

void kbs_peers_get_stats(kbs_peers_stats *out, kbs_peers *t)
{
    pthread_mutex_lock(&t->lock);
    *out = (kbs_peers_stats){.refused_conns = t->refused_conns,
                             .refused_rate = t->refused_rate,
                             .uncounted = t->uncounted,
                             .entries = t->count,
                             .conns = t->conns};
    pthread_mutex_unlock(&t->lock);
}

unsigned kbs_peers_conns(kbs_peers *t, const kbs_peer_addr *a)
{
    pthread_mutex_lock(&t->lock);
    entry *e = find(t, NULL, a);
    unsigned n = e ? e->conns : 0;
    pthread_mutex_unlock(&t->lock);
    return n;
}
