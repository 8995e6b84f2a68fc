/*
 * test_kbs_peers.c - the KBS's per-peer TLS limits (kbs/peers.h): peer
 * addresses (IPv4-mapped IPv6 is the IPv4 peer, the port is ignored),
 * connection counting and release, the handshake token bucket against an
 * injected clock, the bound on tracked peers under a flood of addresses,
 * least-recently-seen eviction, the rate limits on log lines, the keyed
 * bucket hash, concurrent admits and releases, and the
 * "limits" member of kbs.json.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "kbs/kbs.h"
#include "kbs/peers.h"
#include "util/util.h"

/* The peer of the textual address @s (IPv4 or IPv6) and @port. */
static kbs_peer_addr P(const char *s, uint16_t port)
{
    kbs_peer_addr a;
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    if (inet_pton(AF_INET, s, &v4.sin_addr) == 1)
        assert_true(kbs_peer_addr_from_sockaddr(&a, (struct sockaddr *)&v4, sizeof(v4)));
    else {
        assert_int_equal(inet_pton(AF_INET6, s, &v6.sin6_addr), 1);
        assert_true(kbs_peer_addr_from_sockaddr(&a, (struct sockaddr *)&v6, sizeof(v6)));
    }
    return a;
}

/* Peer number @i of a flood: 2001:db8::/64 with @i in the interface id. */
static kbs_peer_addr flood_peer(uint32_t i)
{
    kbs_peer_addr a = P("2001:db8::", 0);
    a.a[12] = (uint8_t)(i >> 24);
    a.a[13] = (uint8_t)(i >> 16);
    a.a[14] = (uint8_t)(i >> 8);
    a.a[15] = (uint8_t)i;
    return a;
}

static kbs_peers *table(unsigned conns, unsigned rate, unsigned burst, size_t max)
{
    kbs_peers_limits lim = {.conns_max = conns, .hs_per_s = rate, .hs_burst = burst};
    kbs_peers *t = NULL;
    assert_int_equal(kbs_peers_new(&t, &lim, max, NULL), 0);
    return t;
}

static kbs_peers_stats stats(kbs_peers *t)
{
    kbs_peers_stats st;
    kbs_peers_get_stats(&st, t);
    return st;
}

static void test_addr(void **state)
{
    (void)state;
    kbs_peer_addr a = P("192.0.2.7", 1000), b = P("192.0.2.7", 2000), m = P("::ffff:192.0.2.7", 3),
                  c = P("192.0.2.8", 1000), v6 = P("2001:db8::7", 1000),
                  compat = P("::192.0.2.7", 1000);
    /* the port is ignored; IPv4 and IPv4-mapped IPv6 are one peer; others are not */
    assert_memory_equal(a.a, b.a, 16);
    assert_memory_equal(a.a, m.a, 16);
    assert_memory_not_equal(a.a, c.a, 16);
    assert_memory_not_equal(a.a, v6.a, 16);
    assert_memory_not_equal(a.a, compat.a, 16);
    char s[KBS_PEER_ADDR_STRLEN];
    kbs_peer_addr_format(s, &m, 64);
    assert_string_equal(s, "192.0.2.7");
    kbs_peer_addr_format(s, &v6, 128);
    assert_string_equal(s, "2001:db8::7");
    kbs_peer_addr_format(s, &compat, 128);
    assert_string_equal(s, "::192.0.2.7");
    /* IPv6 peers are prefixes: the host part goes, IPv4 (mapped) stays whole */
    kbs_peer_addr p1 = P("2001:db8:1:2:aaaa::1", 0), p2 = P("2001:db8:1:2:bbbb::2", 0),
                  p3 = P("2001:db8:1:3::1", 0), odd = P("2001:db8:1:2fff::", 0), v4m = m;
    kbs_peer_addr_mask(&p1, 64);
    kbs_peer_addr_mask(&p2, 64);
    kbs_peer_addr_mask(&p3, 64);
    kbs_peer_addr_mask(&v4m, 64);
    assert_memory_equal(p1.a, p2.a, 16);
    assert_memory_not_equal(p1.a, p3.a, 16);
    assert_memory_equal(v4m.a, m.a, 16);
    kbs_peer_addr_format(s, &p1, 64);
    assert_string_equal(s, "2001:db8:1:2::/64");
    kbs_peer_addr_format(s, &v4m, 64);
    assert_string_equal(s, "192.0.2.7");
    kbs_peer_addr_mask(&odd, 52); /* a prefix that ends inside a byte */
    kbs_peer_addr_format(s, &odd, 52);
    assert_string_equal(s, "2001:db8:1:2000::/52");
    kbs_peer_addr full = P("2001:db8::7", 0);
    kbs_peer_addr_mask(&full, 128);
    assert_memory_equal(full.a, v6.a, 16);
    /* other families and truncated addresses are not peers */
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    kbs_peer_addr x;
    assert_false(kbs_peer_addr_from_sockaddr(&x, (struct sockaddr *)&un, sizeof(un)));
    struct sockaddr_in6 v = {.sin6_family = AF_INET6};
    assert_false(kbs_peer_addr_from_sockaddr(&x, (struct sockaddr *)&v, sizeof(v) - 1));
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    assert_false(kbs_peer_addr_from_sockaddr(&x, (struct sockaddr *)&v4, sizeof(v4) - 1));
}

static void test_count_release(void **state)
{
    (void)state;
    kbs_peers *t = table(3, 0, 1, 64);
    kbs_peer_addr a = P("198.51.100.1", 40000), a_mapped = P("::ffff:198.51.100.1", 40001),
                  b = P("198.51.100.2", 40000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kbs_peers_admit(t, NULL, &a, 1000), KBS_PEERS_ADMIT);
    assert_int_equal(kbs_peers_conns(t, &a), 3);
    /* the fourth, also in its IPv4-mapped form from a dual-stack socket, is refused */
    assert_int_equal(kbs_peers_admit(t, NULL, &a, 1000), KBS_PEERS_REFUSE_CONNS);
    assert_int_equal(kbs_peers_admit(t, NULL, &a_mapped, 1000), KBS_PEERS_REFUSE_CONNS);
    /* another peer is not affected */
    assert_int_equal(kbs_peers_admit(t, NULL, &b, 1000), KBS_PEERS_ADMIT);
    kbs_peers_stats st = stats(t);
    assert_int_equal(st.refused_conns, 2);
    assert_int_equal(st.refused_rate, 0);
    assert_int_equal(st.conns, 4);
    assert_int_equal(st.entries, 2);
    /* one closes (released through the mapped form: the same peer): room for one more */
    kbs_peers_release(t, &a_mapped);
    assert_int_equal(kbs_peers_conns(t, &a), 2);
    assert_int_equal(kbs_peers_admit(t, NULL, &a, 1000), KBS_PEERS_ADMIT);
    assert_int_equal(kbs_peers_admit(t, NULL, &a, 1000), KBS_PEERS_REFUSE_CONNS);
    for (int i = 0; i < 3; i++)
        kbs_peers_release(t, &a);
    kbs_peers_release(t, &b);
    assert_int_equal(kbs_peers_conns(t, &a), 0);
    /* a release of a peer with no connection counted changes nothing */
    kbs_peers_release(t, &a);
    st = stats(t);
    assert_int_equal(st.conns, 0);
    assert_int_equal(st.entries, 2);
    kbs_peers_free(t);

    /* 0: unlimited connections */
    t = table(0, 0, 1, 4);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(kbs_peers_admit(t, NULL, &a, 1000), KBS_PEERS_ADMIT);
    assert_int_equal(kbs_peers_conns(t, &a), 10000);
    kbs_peers_free(t);
}

/* Admit and release at once (a handshake whose connection closes): the bucket alone decides. */
static kbs_peers_verdict handshake(kbs_peers *t, const kbs_peer_addr *a, uint64_t now)
{
    kbs_peers_verdict v = kbs_peers_admit(t, NULL, a, now);
    if (v == KBS_PEERS_ADMIT)
        kbs_peers_release(t, a);
    return v;
}

static void test_bucket(void **state)
{
    (void)state;
    kbs_peer_addr a = P("203.0.113.5", 1), b = P("203.0.113.6", 1);
    kbs_peers *t = table(0, 2, 3, 64); /* 2 handshakes/s, burst 3 */
    uint64_t t0 = 5000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(handshake(t, &a, t0), KBS_PEERS_ADMIT);
    assert_int_equal(handshake(t, &a, t0), KBS_PEERS_REFUSE_RATE);
    assert_int_equal(handshake(t, &b, t0), KBS_PEERS_ADMIT); /* a bucket per peer */
    /* one token per 500 ms: not at 499 ms, at 500 ms, and only one */
    assert_int_equal(handshake(t, &a, t0 + 499), KBS_PEERS_REFUSE_RATE);
    assert_int_equal(handshake(t, &a, t0 + 500), KBS_PEERS_ADMIT);
    assert_int_equal(handshake(t, &a, t0 + 500), KBS_PEERS_REFUSE_RATE);
    /* 1250 ms later: 2.5 tokens, two handshakes */
    assert_int_equal(handshake(t, &a, t0 + 1750), KBS_PEERS_ADMIT);
    assert_int_equal(handshake(t, &a, t0 + 1750), KBS_PEERS_ADMIT);
    assert_int_equal(handshake(t, &a, t0 + 1750), KBS_PEERS_REFUSE_RATE);
    /* the half token left counts: 250 ms more make one */
    assert_int_equal(handshake(t, &a, t0 + 2000), KBS_PEERS_ADMIT);
    /* a long pause (and a clock far from 0) refills to the burst, no more */
    uint64_t t1 = t0 + 86400000ull * 365;
    for (int i = 0; i < 3; i++)
        assert_int_equal(handshake(t, &a, t1), KBS_PEERS_ADMIT);
    assert_int_equal(handshake(t, &a, t1), KBS_PEERS_REFUSE_RATE);
    kbs_peers_stats st = stats(t);
    assert_int_equal(st.refused_rate, 5);
    assert_int_equal(st.refused_conns, 0);
    kbs_peers_free(t);

    /* a refusal for connections takes no token: it cost the server no handshake */
    t = table(1, 1, 2, 64);
    assert_int_equal(kbs_peers_admit(t, NULL, &a, t0), KBS_PEERS_ADMIT); /* 1 token left */
    for (int i = 0; i < 5; i++)
        assert_int_equal(kbs_peers_admit(t, NULL, &a, t0), KBS_PEERS_REFUSE_CONNS);
    kbs_peers_release(t, &a);
    assert_int_equal(kbs_peers_admit(t, NULL, &a, t0), KBS_PEERS_ADMIT); /* the last token */
    kbs_peers_release(t, &a);
    assert_int_equal(kbs_peers_admit(t, NULL, &a, t0), KBS_PEERS_REFUSE_RATE);
    assert_int_equal(kbs_peers_admit(t, NULL, &a, t0 + 1000), KBS_PEERS_ADMIT);
    kbs_peers_free(t);
}

static void test_bound(void **state)
{
    (void)state;
    enum { MAX = 8 };
    kbs_peers *t = table(2, 1, 1, MAX);
    /* a flood of distinct addresses: each is new (a fresh bucket), the table stays at MAX */
    for (uint32_t i = 0; i < 100000; i++) {
        kbs_peer_addr a = flood_peer(i);
        assert_int_equal(handshake(t, &a, 1000), KBS_PEERS_ADMIT);
    }
    kbs_peers_stats st = stats(t);
    assert_int_equal(st.entries, MAX);
    assert_int_equal(st.conns, 0);
    kbs_peers_free(t);

    /* MAX peers holding connections: a new peer is admitted uncounted, logged once per
     * interval; they keep their counts */
    t = table(2, 0, 1, MAX);
    for (uint32_t i = 0; i < MAX; i++) {
        kbs_peer_addr a = flood_peer(i);
        assert_int_equal(kbs_peers_admit(t, NULL, &a, 1000), KBS_PEERS_ADMIT);
    }
    kbs_peer_addr n1 = flood_peer(1000), n2 = flood_peer(1001);
    kbs_peers_note note;
    assert_int_equal(kbs_peers_admit(t, &note, &n1, 1000), KBS_PEERS_ADMIT_UNCOUNTED);
    assert_true(note.log_full);
    assert_int_equal(kbs_peers_admit(t, &note, &n2, 1000 + KBS_PEERS_LOG_INTERVAL_MS - 1),
                     KBS_PEERS_ADMIT_UNCOUNTED);
    assert_false(note.log_full);
    assert_int_equal(kbs_peers_admit(t, &note, &n2, 1000 + KBS_PEERS_LOG_INTERVAL_MS),
                     KBS_PEERS_ADMIT_UNCOUNTED);
    assert_true(note.log_full);
    assert_int_equal(stats(t).uncounted, 3);
    assert_int_equal(kbs_peers_conns(t, &n1), 0);
    for (uint32_t i = 0; i < MAX; i++) {
        kbs_peer_addr a = flood_peer(i);
        assert_int_equal(kbs_peers_conns(t, &a), 1);
    }
    /* one closes: its peer is idle and gives way to the new one */
    kbs_peer_addr p3 = flood_peer(3);
    kbs_peers_release(t, &p3);
    assert_int_equal(kbs_peers_admit(t, NULL, &n1, 30000), KBS_PEERS_ADMIT);
    assert_int_equal(kbs_peers_conns(t, &n1), 1);
    assert_int_equal(kbs_peers_conns(t, &p3), 0);
    for (uint32_t i = 0; i < MAX; i++) {
        kbs_peer_addr a = flood_peer(i);
        assert_int_equal(kbs_peers_conns(t, &a), i == 3 ? 0 : 1);
    }
    st = stats(t);
    assert_int_equal(st.entries, MAX);
    assert_int_equal(st.conns, MAX);
    kbs_peers_free(t);
}

static void test_lru(void **state)
{
    (void)state;
    /* two entries, 1 handshake/s: an evicted peer comes back with a full bucket, a peer seen
     * recently keeps its empty one */
    kbs_peers *t = table(0, 1, 1, 2);
    kbs_peer_addr a = P("192.0.2.1", 1), b = P("192.0.2.2", 1), c = P("192.0.2.3", 1);
    assert_int_equal(handshake(t, &a, 1000), KBS_PEERS_ADMIT);
    assert_int_equal(handshake(t, &b, 1001), KBS_PEERS_ADMIT);
    assert_int_equal(handshake(t, &a, 1002), KBS_PEERS_REFUSE_RATE); /* a seen after b */
    assert_int_equal(handshake(t, &c, 1003), KBS_PEERS_ADMIT);       /* evicts b */
    assert_int_equal(handshake(t, &a, 1004), KBS_PEERS_REFUSE_RATE); /* a kept its bucket */
    assert_int_equal(handshake(t, &b, 1005), KBS_PEERS_ADMIT);       /* b forgotten; evicts c */
    assert_int_equal(handshake(t, &a, 1006), KBS_PEERS_REFUSE_RATE);
    assert_int_equal(stats(t).entries, 2);
    kbs_peers_free(t);
}

static void test_log_limits(void **state)
{
    (void)state;
    kbs_peers *t = table(1, 0, 1, 64);
    kbs_peer_addr a = P("192.0.2.10", 1);
    kbs_peers_note n;
    uint64_t t0 = 777;
    assert_int_equal(kbs_peers_admit(t, &n, &a, t0), KBS_PEERS_ADMIT);
    assert_false(n.log_peer || n.log_flood || n.log_full);
    /* the first refusal is logged; the next 100 within the interval are only counted */
    assert_int_equal(kbs_peers_admit(t, &n, &a, t0), KBS_PEERS_REFUSE_CONNS);
    assert_true(n.log_peer);
    assert_int_equal(n.peer_refused, 1);
    assert_int_equal(n.peer_conns, 1);
    int lines = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(
            kbs_peers_admit(t, &n, &a, t0 + (uint64_t)i * (KBS_PEERS_LOG_INTERVAL_MS - 1) / 99),
            KBS_PEERS_REFUSE_CONNS);
        lines += n.log_peer;
    }
    assert_int_equal(lines, 0);
    /* one interval later: a line again, with the count of all since the previous one */
    assert_int_equal(kbs_peers_admit(t, &n, &a, t0 + KBS_PEERS_LOG_INTERVAL_MS),
                     KBS_PEERS_REFUSE_CONNS);
    assert_true(n.log_peer);
    assert_int_equal(n.peer_refused, 101);
    assert_int_equal(n.refused_total, 102);
    kbs_peers_free(t);

    /* many peers refused in one interval: KBS_PEERS_LOG_LINES lines, one flood line, then
     * silence until the interval is over */
    enum { PEERS = KBS_PEERS_LOG_LINES + 10 };
    t = table(1, 0, 1, 64);
    uint64_t t1 = 50000;
    int peer_lines = 0, flood_lines = 0;
    for (uint32_t i = 0; i < PEERS; i++) {
        kbs_peer_addr p = flood_peer(i);
        assert_int_equal(kbs_peers_admit(t, NULL, &p, t1), KBS_PEERS_ADMIT);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(kbs_peers_admit(t, &n, &p, t1 + i), KBS_PEERS_REFUSE_CONNS);
            peer_lines += n.log_peer;
            flood_lines += n.log_flood;
            if (n.log_flood)
                assert_int_equal(n.refused_total, 3 * KBS_PEERS_LOG_LINES + k + 1);
        }
    }
    assert_int_equal(peer_lines, KBS_PEERS_LOG_LINES);
    assert_int_equal(flood_lines, 1);
    /* the next interval: the peers not logged yet get their line, with their count */
    kbs_peer_addr last = flood_peer(PEERS - 1);
    assert_int_equal(kbs_peers_admit(t, &n, &last, t1 + KBS_PEERS_LOG_INTERVAL_MS),
                     KBS_PEERS_REFUSE_CONNS);
    assert_true(n.log_peer);
    assert_int_equal(n.peer_refused, 4);
    kbs_peers_free(t);
}

static void test_keyed_hash(void **state)
{
    (void)state;
    kbs_peers_limits lim = {.conns_max = 1, .hs_per_s = 0, .hs_burst = 1};
    kbs_peers *t1 = NULL, *t2 = NULL;
    assert_int_equal(kbs_peers_new(&t1, &lim, 16, NULL), 0);
    assert_int_equal(kbs_peers_new(&t2, &lim, 16, NULL), 0);
    /* stable within a table, different between tables (each has its own random key): an
     * address cannot be chosen to land in a known bucket */
    int differ = 0;
    for (int i = 0; i < 8; i++) {
        kbs_peer_addr a = {{0}};
        a.a[15] = (uint8_t)i;
        uint64_t h = kbs__peers_hash(t1, &a);
        assert_true(h == kbs__peers_hash(t1, &a));
        differ += h != kbs__peers_hash(t2, &a);
    }
    assert_true(differ >= 7);
    kbs_peers_free(t1);
    kbs_peers_free(t2);
}

typedef struct {
    kbs_peers *t;
    uint32_t seed;
    int admitted;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *w = p;
    for (int i = 0; i < 20000; i++) {
        kbs_peer_addr a = flood_peer((w->seed + (uint32_t)i * 7) % 40);
        if (kbs_peers_admit(w->t, NULL, &a, 1000 + (uint64_t)i) == KBS_PEERS_ADMIT) {
            w->admitted++;
            kbs_peers_release(w->t, &a);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    kbs_peers *t = table(3, 0, 1, 32); /* fewer entries than peers: evictions race too */
    pthread_t th[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){.t = t, .seed = (uint32_t)i * 11};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    int admitted = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        admitted += args[i].admitted;
    }
    kbs_peers_stats st = stats(t);
    assert_int_equal(st.conns, 0);
    assert_true(st.entries <= 32);
    assert_int_equal((uint64_t)admitted + st.refused_conns + st.uncounted, 4 * 20000);
    kbs_peers_free(t);
}

/* kbs.json with @limits as its "limits" member (NULL: none), loaded; the error, if any. */
static int load_limits(kbs_config **out, const char *limits, cista_error **err)
{
    char dir[] = "/tmp/test_kbs_peers.XXXXXX";
    assert_non_null(mkdtemp(dir));
    _cleanup_free_ char *path = xasprintf("%s/kbs.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"listen\": \"127.0.0.1:0\"%s%s}", limits ? ", \"limits\": " : "",
            limits ? limits : "");
    fclose(f);
    int r = kbs_config_load(out, path, err);
    unlink(path);
    rmdir(dir);
    return r;
}

static void test_config(void **state)
{
    (void)state;
    kbs_config *c = NULL;
    assert_int_equal(load_limits(&c, NULL, NULL), 0);
    /* the defaults: generous, never 0 */
    assert_int_equal(c->conns_per_peer, 512);
    assert_int_equal(c->handshakes_per_peer, 200);
    assert_int_equal(c->handshake_burst, 2000);
    assert_int_equal(c->peer_ipv6_prefix, 64);
    kbs_config_free(c);
    c = NULL;
    assert_int_equal(load_limits(&c,
                                 "{\"connections_per_peer\": 3, \"handshakes_per_peer_per_s\": 0, "
                                 "\"handshake_burst\": 7}",
                                 NULL),
                     0);
    assert_int_equal(c->conns_per_peer, 3);
    assert_int_equal(c->handshakes_per_peer, 0);
    assert_int_equal(c->handshake_burst, 7);
    kbs_config_free(c);
    c = NULL;
    /* a member given alone leaves the others at their defaults */
    assert_int_equal(load_limits(&c, "{\"connections_per_peer\": 0}", NULL), 0);
    assert_int_equal(c->conns_per_peer, 0);
    assert_int_equal(c->handshakes_per_peer, 200);
    kbs_config_free(c);
    static const struct {
        const char *limits, *words;
    } bad[] = {
        {"{\"connections_per_peer\": 3, \"conections\": 1}", "unknown member \"conections\""},
        {"{\"connections_per_peer\": -1}", "connections_per_peer\" must be an integer in 0.."},
        {"{\"handshakes_per_peer_per_s\": 1.5}", "handshakes_per_peer_per_s\" must be"},
        {"{\"handshake_burst\": 0}", "handshake_burst\" must be an integer in 1..10000000"},
        {"{\"ipv6_prefix\": 0}", "ipv6_prefix\" must be an integer in 1..128"},
        {"{\"ipv6_prefix\": 129}", "ipv6_prefix\" must be an integer in 1..128"},
        {"{\"handshake_burst\": 10000001}", "handshake_burst\" must be"},
        {"[]", "limits"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        _cleanup_err_ cista_error *err = NULL;
        c = NULL;
        assert_int_equal(load_limits(&c, bad[i].limits, &err), -EINVAL);
        assert_null(c);
        _cleanup_free_ char *msg = err_str(err);
        if (!strstr(msg, bad[i].words))
            fail_msg("limits %s: \"%s\" does not say \"%s\"", bad[i].limits, msg, bad[i].words);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr),       cmocka_unit_test(test_count_release),
        cmocka_unit_test(test_bucket),     cmocka_unit_test(test_bound),
        cmocka_unit_test(test_lru),        cmocka_unit_test(test_log_limits),
        cmocka_unit_test(test_keyed_hash), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
