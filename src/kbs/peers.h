/*
 * peers.h - per-peer admission limits of the KBS's TLS listener: a bounded
 * table of client addresses, each with its number of open connections and a
 * token bucket of TLS handshakes.
 *
 * The server asks kbs_peers_admit() from its TLS ClientHello callback, before
 * the handshake does any public-key work (no key share computed, nothing
 * signed), and calls kbs_peers_release() when the SSL object of a connection
 * that was counted is freed. A peer is one IPv4 address (its IPv4-mapped
 * IPv6 form is the same peer) or one IPv6 prefix: a host is commonly given a
 * whole /64, so per-address limits would not hold one client back (the
 * server masks IPv6 addresses with kbs_peer_addr_mask(), by default to /64).
 * The port is ignored.
 *
 * Memory is bounded: at most @max_entries peers are tracked, allocated once
 * (calloc: pages are touched only as entries are used). A peer with no open
 * connection is idle, and when the table is full the peer idle the longest
 * gives way (its handshake bucket is forgotten: it starts full again), so a
 * flood of distinct source addresses cannot grow memory. A table full of
 * peers that all hold connections (each needs a socket, so only when
 * @max_entries exceeds what the process's descriptor limit allows) admits a
 * new peer uncounted rather than refusing everyone new.
 *
 * The table does not log: kbs_peers_admit() says when a refusal should be
 * logged (at most once per peer per KBS_PEERS_LOG_INTERVAL_MS and
 * KBS_PEERS_LOG_LINES peers per interval), so a client cannot turn its
 * refused handshakes into a flood of log lines.
 *
 * Thread-safe: one mutex guards the table (all I/O workers admit and
 * release). Trust: the addresses come from the kernel (getpeername() of an
 * accepted socket) but remote clients choose them, IPv6 ones nearly freely:
 * buckets are indexed by a keyed hash (SipHash-2-4 under a random key), so
 * addresses cannot be picked to share one chain.
 */
#ifndef CISTA_KBS_PEERS_H
#define CISTA_KBS_PEERS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util/err.h"

/* Peers the KBS server tracks: a few MiB at most, more than a default descriptor limit. */
#define KBS_PEERS_MAX_ENTRIES 65536
/* A peer's refusals are logged at most once per interval, and at most this many peers' per
 * interval in all. */
#define KBS_PEERS_LOG_INTERVAL_MS 10000
#define KBS_PEERS_LOG_LINES 16

typedef struct {
    unsigned conns_max; /* open connections per peer; 0: unlimited */
    unsigned hs_per_s;  /* handshake tokens a peer regains per second; 0: unlimited */
    unsigned hs_burst;  /* bucket size: handshakes a peer idle for long may make at once (>= 1) */
} kbs_peers_limits;

/* A peer: IPv6 bytes, IPv4 as IPv4-mapped (::ffff:a.b.c.d). */
typedef struct {
    uint8_t a[16];
} kbs_peer_addr;

/* INET6_ADDRSTRLEN + "/128": room for any kbs_peer_addr_format() output. */
#define KBS_PEER_ADDR_STRLEN 50

/* The peer of @sa (AF_INET or AF_INET6, @len bytes, port ignored); false for another family. */
bool kbs_peer_addr_from_sockaddr(kbs_peer_addr *out, const struct sockaddr *sa, socklen_t len);
/* Clear the bits of an IPv6 address after its first @v6_prefix (1..128); IPv4 stays whole. */
void kbs_peer_addr_mask(kbs_peer_addr *a, unsigned v6_prefix);
/* "192.0.2.1" for IPv4 (mapped or not); "2001:db8::/64" for IPv6 masked to @v6_prefix < 128,
 * "2001:db8::1" with 128. */
void kbs_peer_addr_format(char out[KBS_PEER_ADDR_STRLEN], const kbs_peer_addr *a,
                          unsigned v6_prefix);

typedef struct kbs_peers kbs_peers;

/* A table of at most @max_entries (>= 1) peers under the limits @lim (copied). Caller frees. */
int kbs_peers_new(kbs_peers **out, const kbs_peers_limits *lim, size_t max_entries,
                  cista_error **err) __attribute__((warn_unused_result));
void kbs_peers_free(kbs_peers *t);

typedef enum {
    KBS_PEERS_ADMIT = 0,       /* counted: call kbs_peers_release() when the connection ends */
    KBS_PEERS_ADMIT_UNCOUNTED, /* the table is full of peers holding connections: not counted */
    KBS_PEERS_REFUSE_CONNS,    /* the peer already holds conns_max connections */
    KBS_PEERS_REFUSE_RATE,     /* the peer's handshake bucket is empty */
} kbs_peers_verdict;

/* What the caller should log about one kbs_peers_admit() call (nothing when all false). */
typedef struct {
    bool log_peer;          /* a refusal: log it, with @peer_refused and @peer_conns */
    uint64_t peer_refused;  /* refusals of this peer since its previous line, this one included */
    unsigned peer_conns;    /* connections the peer holds */
    bool log_flood;         /* KBS_PEERS_LOG_LINES peers were logged this interval: say it once */
    bool log_full;          /* ADMIT_UNCOUNTED, logged at most once per interval */
    uint64_t refused_total; /* every refusal so far (for the flood line) */
} kbs_peers_note;

/*
 * Decide on a new TLS handshake of peer @a at monotonic time @now_ms (never decreasing; the
 * caller's clock, so tests inject theirs): refused when the peer holds conns_max connections
 * (no token taken), or when its bucket, refilled at hs_per_s up to hs_burst, has no token left;
 * otherwise a token is taken and the connection counted. @out_note (may be NULL) gets what to
 * log.
 */
kbs_peers_verdict kbs_peers_admit(kbs_peers *t, kbs_peers_note *out_note, const kbs_peer_addr *a,
                                  uint64_t now_ms) __attribute__((warn_unused_result));
/* The connection of @a counted by kbs_peers_admit() (verdict KBS_PEERS_ADMIT) has ended. */
void kbs_peers_release(kbs_peers *t, const kbs_peer_addr *a);

typedef struct {
    uint64_t refused_conns, refused_rate, uncounted; /* verdicts so far */
    size_t entries;                                  /* peers tracked now */
    size_t conns;                                    /* counted connections open now */
} kbs_peers_stats;
void kbs_peers_get_stats(kbs_peers_stats *out, kbs_peers *t);
/* Connections counted for @a now (0 when it is not tracked). */
unsigned kbs_peers_conns(kbs_peers *t, const kbs_peer_addr *a);

/* The bucket hash of @a: OpenSSL's SipHash-2-4 under the table's random key (for its test). */
uint64_t kbs__peers_hash(kbs_peers *t, const kbs_peer_addr *a);

#endif
