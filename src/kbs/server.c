/*
 * server.c - the KBS HTTP(S) server (see kbs.h): an HTTP/1.1 connection layer of its own
 * (http1.h parses the request heads) on libevent's event loop, with OpenSSL for TLS 1.3 / 1.2.
 * Two kinds of threads:
 *
 * - I/O workers, one per core, each with its own event base, all accepting on one shared
 *   listening socket (each holds a dup of it). They do the network side only: accept, TLS
 *   handshakes and records, HTTP parsing, sending replies; and the cheap requests (see
 *   runs_inline()).
 * - Request handlers, one per core, each with its own store connection, taking parsed
 *   requests from ONE shared FIFO queue and running kbs_handle() (evidence verification,
 *   JWE, tokens, store reads).
 *
 * The split keeps the CPU-heavy work (a P-384 verify is ~0.4 ms) off the event loops and
 * balances it: a connection stays on the I/O worker that accepted it, and with handlers inline
 * one worker could own most busy keep-alive connections while another idled, and every
 * request queued behind the verifies of its own worker (head-of-line blocking). Now any idle
 * handler takes the oldest request of any connection.
 *
 * Why not evhttp and bufferevent_openssl (the first versions used them): per request they
 * enabled and disabled the socket's events (~4 epoll_ctl), read every TLS record in two
 * read(2)s (header, then body), allocated the request, its URI and every header line, and
 * printed the reply head through vfprintf: about as much CPU as the KBS's own work on a
 * request. Here a connection's socket is registered for reading once, for its lifetime (level-
 * triggered; writing is watched only while a reply is blocked), OpenSSL reads ahead (one
 * read(2) per request), a request is parsed in place in the connection's buffer (its path
 * decoded there, its header values NUL-terminated there, its body used from there) and a reply
 * leaves in one write(2), one TLS record when it fits in one.
 *
 * One request at a time per connection: while one is at a handler, the connection is not
 * read (a client that pipelines, or closes early, has its socket's read event removed until
 * the reply is out), so the buffer its request points into stays as it was.
 *
 * Limits against hostile or slow clients: request heads of KBS_HTTP_HEAD_MAX bytes, bodies of
 * KBS_MAX_BODY (413 before the body is read), only GET, POST, PUT and DELETE (405), and the
 * config's "timeout" (seconds) for each phase of a connection: a TLS handshake, an idle
 * keep-alive connection, a request from its first byte to its last, a reply from its first
 * byte to its last. A connection refused with an error is closed the way RFC 9112 §9.6 asks
 * (the reply, then our write side shut, then the client's bytes read and dropped for a while)
 * so that the client reads the reply instead of a reset. kbs_server_stop() writes one byte to
 * a pipe every worker watches: each stops accepting, closes its idle connections, lets
 * in-flight replies drain for up to one second, and exits its loop.
 *
 * Group commit: handlers do not write their audit entries themselves; the worker hands the
 * entries of a request, together with its finished reply, to one audit writer thread
 * (commit.c) and serves other requests meanwhile. The writer commits everything queued in one
 * transaction (one fsync) and then passes each job back to its worker (event_active on the
 * worker's base), which sends the reply: no reply leaves before its audit entries are
 * durable, and concurrent requests share an fsync.
 *
 * TLS: TLS 1.3 session tickets (one per handshake, stateless, keys shared by all workers
 * through the one SSL_CTX) let a returning client resume without a certificate signature;
 * HTTP/1.1 keep-alive lets a client run auth, attest and resource on one connection.
 *
 * Per-peer limits (config "limits", peers.h): open TLS connections and TLS handshakes per
 * second of one client address, decided in the ClientHello callback, before the handshake's
 * key exchange and signature. Plain HTTP has no such hook and no per-peer limits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "kbs/http1.h"
#include "kbs/kbs_int.h"
#include "kbs/peers.h"
#include "util/httpc.h"
#include "util/log.h"
#include "util/util.h"

/* A connection's input buffer: its first size, and its bound (one whole request). */
#define CONN_IN_INITIAL 4096
#define CONN_IN_MAX (KBS_HTTP_HEAD_MAX + KBS_MAX_BODY)
/* How often each worker looks for connections past their deadline. */
#define SWEEP_MS 250
/* How long a connection refused with an error is read (and dropped) after its reply. */
#define LINGER_MS 2000
/* Reads of one connection per wake-up of its worker. */
#define CONN_READS_PER_WAKE 8
/* How long accepting pauses when the process is out of descriptors or memory. */
#define ACCEPT_PAUSE_MS 100

typedef struct worker worker;
typedef struct conn conn;

typedef struct pending pending;

/* A request handler thread with its own handler context (store connection). */
typedef struct {
    kbs_server *s;
    pthread_t th;
    kbs_ctx *ctx;
    bool started;
} handler;

struct kbs_server {
    const kbs_config *cfg;
    kbs_shared *sh;
    SSL_CTX *ssl;
    kbs_peers *peers;       /* NULL: no per-peer limits (plain HTTP, or all limits 0) */
    struct event *peers_ev; /* the summary of refusals (on the first worker's loop) */
    uint64_t peers_logged_conns, peers_logged_rate; /* refusals counted by earlier summaries */
    int listen_fd;
    char addr[80];
    unsigned nworkers;
    worker *workers;
    int stop_pipe[2];
    kbs_committer *committer;
    unsigned inflight; /* atomic: requests received and not yet answered (the committer reads it) */
    /* the request queue shared by all I/O workers and handlers (FIFO) */
    unsigned nhandlers;
    handler *handlers;
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    bool q_init, q_stop;
    pending *q_head, **q_tail;
};

struct worker {
    kbs_server *s;
    pthread_t th;
    struct event_base *base;
    int listen_fd;           /* this worker's dup of the listening socket */
    struct event *listen_ev; /* NULL once stopping */
    struct event *accept_ev; /* one-shot: accept again after ACCEPT_PAUSE_MS */
    struct event *stop_ev;
    struct event *sweep_ev; /* every SWEEP_MS: connections past their deadline */
    conn *conns;            /* every open connection of this worker */
    bool stopping;          /* no more accepts; replies close their connections */
    bool started;
    /* finished replies (audit entries durable), waiting to be sent by this worker */
    pthread_mutex_t done_mu;
    bool done_mu_init;
    pending *done_head;
    struct event *done_ev;
    bool kick;     /* the writer queued replies and will activate done_ev (writer thread only) */
    kbs_ctx *ctx;  /* cheap requests run on this thread (see runs_inline()); NULL: none do */
    time_t date_t; /* the second date[] was formatted for */
    char date[40]; /* "Date: ..." of the reply heads */
};

/*
 * One client connection, owned by its I/O worker's thread. The request being served is parsed
 * in place in @in: while it is @busy (at a handler or the audit writer) @in is neither read
 * into nor moved, so the kbs_request handed out may point into it.
 */
struct conn {
    worker *w;
    conn *prev, *next; /* the worker's list */
    int fd;
    SSL *ssl;          /* NULL: plain HTTP */
    struct event *rev; /* EV_READ | EV_PERSIST: added for the connection's life, except paused */
    struct event *wev; /* EV_WRITE | EV_PERSIST: added only while a write is blocked */
    bool reading, writing; /* rev / wev added */
    bool handshaken;       /* TLS handshake done (always, for plain HTTP) */
    bool have_head;        /* @req holds the head of the request at the start of @in */
    bool closing;          /* close once @out is written */
    bool linger;           /* ... and then read and drop the client's bytes for LINGER_MS */
    bool lingering;        /* in that phase: our write side is shut */
    bool idle;             /* between requests (for the deadline) */
    bool interim;          /* @out holds only a 100 Continue */
    bool dead;             /* failed while @busy: freed when its request comes back */
    size_t scanned;        /* bytes of @in known not to hold the end of a head */
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out; /* the reply being written: a secret (tokens, released resources) */
    size_t out_len, out_off, out_cap;
    kbs_http_req req;
    pending *busy;              /* the request out to a handler / the audit writer */
    uint64_t deadline;          /* CLOCK_MONOTONIC ms; 0: none (while busy) */
    char peer[80];              /* "ADDR:PORT" for the audit log */
    struct sockaddr_storage sa; /* the client's address, from accept */
    socklen_t salen;
};

/*
 * One request from its parse on the I/O worker to its reply there. Its strings and body point
 * into its connection's input buffer, which stays as it is until the reply is sent (see conn).
 * A handler thread reads @req and writes @resp; the worker does the rest.
 */
struct pending {
    kbs_commit_job job; /* first: the committer hands back &job */
    worker *w;
    conn *c;
    kbs_request req;
    kbs_response resp;
    pending *next;
};

static pthread_once_t g_evthread_once = PTHREAD_ONCE_INIT;

static void evthread_init(void)
{
    evthread_use_pthreads();
}

/* ---- listening socket ---- */

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

static int open_listener(kbs_server *s, cista_error **err)
{
    char host[256];
    const char *l = s->cfg->listen;
    const char *colon = strrchr(l, ':');
    if (!colon || colon == l || strlen(l) >= sizeof(host))
        return err_set(err, -EINVAL, "listen address \"%s\" must be HOST:PORT", l);
    size_t hl = (size_t)(colon - l);
    if (l[0] == '[' && hl >= 2 && l[hl - 1] == ']')
        snprintf(host, sizeof(host), "%.*s", (int)(hl - 2), l + 1);
    else
        snprintf(host, sizeof(host), "%.*s", (int)hl, l);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gr = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gr != 0)
        return err_set(err, -EINVAL, "listen address %s: %s", l, gai_strerror(gr));
    int r = 0;
    if (!s->ssl && !s->cfg->insecure_http && !is_loopback(ai->ai_addr)) {
        freeaddrinfo(ai);
        return err_set(err, -EINVAL,
                       "refusing plain HTTP on %s, which is not a loopback address: configure "
                       "tls.cert and tls.key, or pass --insecure-http",
                       l);
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = err_set_sys(err, -errno, "socket");
        goto out;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Inherited by accepted sockets on Linux: small replies must not wait for delayed ACKs. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        r = err_set_sys(err, -errno, "bind %s", l);
        close(fd);
        goto out;
    }
    if (listen(fd, 1024) < 0) {
        r = err_set_sys(err, -errno, "listen %s", l);
        close(fd);
        goto out;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    char h[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, h, sizeof(h));
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        snprintf(s->addr, sizeof(s->addr), "%s:%u", h, port);
    } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, h, sizeof(h));
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        snprintf(s->addr, sizeof(s->addr), "[%s]:%u", h, port);
    }
    s->listen_fd = fd;
out:
    freeaddrinfo(ai);
    return r;
}

/* ---- per-peer limits ---- */

/*
 * A connection counted in the peer table, kept as ex_data of its SSL object: OpenSSL calls
 * peer_ticket_free() whenever that SSL is freed (conn_free(): close, timeout, error or server
 * shutdown), which releases the count.
 */
typedef struct {
    kbs_peers *t;
    kbs_peer_addr a;
} peer_ticket;

static pthread_once_t g_peer_once = PTHREAD_ONCE_INIT;
static int g_peer_idx = -1;
/* ex_data of a connection decided on but not counted (the table was full) */
static char g_peer_uncounted;

static void peer_ticket_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    peer_ticket *tk = ptr;
    if (!tk || ptr == &g_peer_uncounted)
        return;
    kbs_peers_release(tk->t, &tk->a);
    free(tk);
}

static void peer_idx_init(void)
{
    g_peer_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, peer_ticket_free);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The log lines kbs_peers_admit() asked for (never one per refused connection). */
static void log_peer_note(const kbs_server *s, const kbs_peer_addr *a, kbs_peers_verdict v,
                          const kbs_peers_note *n)
{
    const kbs_config *c = s->cfg;
    if (n->log_full)
        log_warn("KBS: the peer table is full (%d addresses, each holding a TLS connection): "
                 "connections of new addresses are admitted without per-peer limits",
                 KBS_PEERS_MAX_ENTRIES);
    if (n->log_peer) {
        char addr[KBS_PEER_ADDR_STRLEN];
        kbs_peer_addr_format(addr, a, c->peer_ipv6_prefix);
        if (v == KBS_PEERS_REFUSE_CONNS)
            log_warn("KBS: TLS handshake from %s refused: it holds %u connections "
                     "(limits.connections_per_peer); %llu refused since the last such line "
                     "for this address (at most one per %d s)",
                     addr, n->peer_conns, (unsigned long long)n->peer_refused,
                     KBS_PEERS_LOG_INTERVAL_MS / 1000);
        else
            log_warn("KBS: TLS handshake from %s refused: more than %u handshakes per second "
                     "after a burst of %u (limits.handshakes_per_peer_per_s, "
                     "limits.handshake_burst); %llu refused since the last such line for this "
                     "address (at most one per %d s)",
                     addr, c->handshakes_per_peer, c->handshake_burst,
                     (unsigned long long)n->peer_refused, KBS_PEERS_LOG_INTERVAL_MS / 1000);
    }
    if (n->log_flood)
        log_warn("KBS: TLS handshakes of more than %d addresses refused within %d s: further "
                 "addresses are not logged until the %d s are over (%llu handshakes refused "
                 "since the start)",
                 KBS_PEERS_LOG_LINES, KBS_PEERS_LOG_INTERVAL_MS / 1000,
                 KBS_PEERS_LOG_INTERVAL_MS / 1000, (unsigned long long)n->refused_total);
}

/*
 * Every KBS_PEERS_LOG_INTERVAL_MS, on the first I/O worker: how many handshakes were refused
 * since the previous summary, so a burst of refusals is counted even when its peer's log line
 * came before most of them.
 */
static void on_peers_summary(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kbs_server *s = arg;
    kbs_peers_stats st;
    kbs_peers_get_stats(&st, s->peers);
    uint64_t dc = st.refused_conns - s->peers_logged_conns,
             dr = st.refused_rate - s->peers_logged_rate;
    if (!dc && !dr)
        return;
    s->peers_logged_conns = st.refused_conns;
    s->peers_logged_rate = st.refused_rate;
    log_warn("KBS: %llu TLS handshakes refused in the last %d s: %llu over "
             "limits.connections_per_peer, %llu over limits.handshakes_per_peer_per_s (%zu "
             "addresses tracked, %zu connections open)",
             (unsigned long long)(dc + dr), KBS_PEERS_LOG_INTERVAL_MS / 1000,
             (unsigned long long)dc, (unsigned long long)dr, st.entries, st.conns);
}

/*
 * ClientHello callback: the first point of a handshake where nothing costly has been done: the
 * key share is computed and the certificate signed only after it returns. A refusal fails the
 * handshake with an internal_error alert and the connection is closed. Called again for the second
 * ClientHello after a HelloRetryRequest: that handshake was decided on already.
 */
static int on_client_hello(SSL *ssl, int *al, void *arg)
{
    kbs_server *s = arg;
    if (SSL_get_ex_data(ssl, g_peer_idx))
        return SSL_CLIENT_HELLO_SUCCESS;
    const conn *c = SSL_get_app_data(ssl);
    kbs_peer_addr a;
    if (!c || !kbs_peer_addr_from_sockaddr(&a, (const struct sockaddr *)&c->sa, c->salen)) {
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    kbs_peer_addr_mask(&a, s->cfg->peer_ipv6_prefix);
    kbs_peers_note note;
    kbs_peers_verdict v = kbs_peers_admit(s->peers, &note, &a, now_ms());
    log_peer_note(s, &a, v, &note);
    void *mark = &g_peer_uncounted;
    switch (v) {
    case KBS_PEERS_ADMIT: {
        peer_ticket *tk = xmalloc(sizeof(*tk));
        *tk = (peer_ticket){.t = s->peers, .a = a};
        mark = tk;
        break;
    }
    case KBS_PEERS_ADMIT_UNCOUNTED:
        break;
    default:
        /* No TLS alert says "too many connections": internal_error is the one that blames
         * neither the client's configuration nor its certificate. */
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (SSL_set_ex_data(ssl, g_peer_idx, mark) != 1) {
        /* out of memory: nothing would release the count, so neither count nor serve it */
        if (mark != &g_peer_uncounted) {
            kbs_peers_release(s->peers, &a);
            free(mark);
        }
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* The peer table and the ClientHello callback on @ctx, unless every limit is 0. */
static int setup_peer_limits(kbs_server *s, SSL_CTX *ctx, cista_error **err)
{
    const kbs_config *c = s->cfg;
    if (!c->conns_per_peer && !c->handshakes_per_peer)
        return 0;
    pthread_once(&g_peer_once, peer_idx_init);
    if (g_peer_idx < 0)
        return err_set_ssl(err, -ENOMEM, "TLS: cannot register the per-peer limits' ex_data");
    kbs_peers_limits lim = {.conns_max = c->conns_per_peer,
                            .hs_per_s = c->handshakes_per_peer,
                            .hs_burst = c->handshake_burst};
    int r = kbs_peers_new(&s->peers, &lim, KBS_PEERS_MAX_ENTRIES, err);
    if (r < 0)
        return r;
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, s);
    return 0;
}

static int make_ssl(kbs_server *s, cista_error **err)
{
    const kbs_config *c = s->cfg;
    if (!c->tls_cert && !c->tls_key)
        return 0;
    if (!c->tls_cert || !c->tls_key)
        return err_set(err, -EINVAL, "tls needs both cert and key");
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return err_set_ssl(err, -ENOMEM, "SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* CLEANSE_PLAINTEXT: records are decrypted in place, and what they held (bearer tokens,
     * cookies, an admin's resource values) must not stay in OpenSSL's read buffer */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    /* Key exchange: X25519 first (the cheapest; what OpenSSL, rustls and Go clients offer first),
     * then the NIST curves; no finite-field groups or X448 (several times the CPU per handshake).
     */
    if (SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384:P-521") != 1) {
        SSL_CTX_free(ctx);
        return err_set_ssl(err, -EINVAL, "TLS: cannot set the key exchange groups");
    }
    /* Resumption: one stateless TLS 1.3 ticket per full handshake (the default is two), a
     * bounded server-side cache for TLS 1.2 session ids. */
    SSL_CTX_set_num_tickets(ctx, 1);
    /* One read(2) per request rather than two per record (header, then body); a reply may move
     * (the buffer grows) while a write of it waits for the socket. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 10000);
    static const unsigned char sid_ctx[] = "cista-kbs";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1) {
        SSL_CTX_free(ctx);
        return err_set_ssl(err, -EINVAL, "TLS certificate %s", c->tls_cert);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return err_set_ssl(err, -EINVAL, "TLS key %s (or it does not match the certificate)",
                           c->tls_key);
    }
    int r = setup_peer_limits(s, ctx, err);
    if (r < 0) {
        SSL_CTX_free(ctx);
        return r;
    }
    s->ssl = ctx;
    return 0;
}

/* ---- requests ---- */

static void on_committed(kbs_commit_job *j, void *arg);
static void queue_push(kbs_server *s, pending *p);
static int handle_inline(worker *w, pending *p);

/*
 * The requests an I/O worker runs itself instead of handing them to a handler thread: a
 * challenge (POST /auth) and a resource release (GET /resource/...), which cost tens of µs and
 * touch only the in-memory session table and local SQLite reads (WAL: a reader never waits for
 * the writer). The hand-off to a handler and back cost about as much again, and they no longer
 * queue behind attestations (a P-384 verify each). /attest, admin calls and anything that
 * could wait on a network store stay with the handlers.
 */
static bool runs_inline(const worker *w, const kbs_request *r)
{
    if (!w->ctx)
        return false;
    if (!strcmp(r->method, "POST"))
        return !strcmp(r->path, "/kbs/v0/auth");
    return !strcmp(r->method, "GET") && !strncmp(r->path, "/kbs/v0/resource/", 17);
}

static void worker_done_queue(pending *p)
{
    worker *w = p->w;
    pthread_mutex_lock(&w->done_mu);
    p->next = w->done_head;
    w->done_head = p;
    pthread_mutex_unlock(&w->done_mu);
}

/* Hand a finished request back to its I/O worker. Any thread. */
static void worker_done_push(pending *p)
{
    worker *w = p->w; /* once queued, @p is the worker's: it may be answered and freed at once */
    worker_done_queue(p);
    event_active(w->done_ev, EV_READ, 0);
}

/*
 * Run one request on @ctx; true when its reply waits for its audit entries (group commit: the
 * writer hands it back), false when it may leave at once.
 */
static bool run_request(kbs_server *s, kbs_ctx *ctx, pending *p)
{
    memset(&p->resp, 0, sizeof(p->resp));
    kbs_handle(ctx, &p->req, &p->resp);
    if (ctx->audit_job.count == 0)
        return false;
    p->job = ctx->audit_job;
    memset(&ctx->audit_job, 0, sizeof(ctx->audit_job));
    p->job.done = on_committed;
    p->job.arg = p;
    kbs__committer_submit(s->committer, &p->job);
    return true;
}

/* Handler thread. */
static void handle_one(handler *h, pending *p)
{
    if (!run_request(h->s, h->ctx, p))
        worker_done_push(p);
}

static void queue_push(kbs_server *s, pending *p)
{
    p->next = NULL;
    pthread_mutex_lock(&s->q_mu);
    *s->q_tail = p;
    s->q_tail = &p->next;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
}

static void *handler_main(void *arg)
{
    handler *h = arg;
    kbs_server *s = h->s;
    pthread_mutex_lock(&s->q_mu);
    for (;;) {
        while (!s->q_head && !s->q_stop)
            pthread_cond_wait(&s->q_cv, &s->q_mu);
        if (s->q_stop)
            break;
        pending *p = s->q_head;
        s->q_head = p->next;
        if (!s->q_head)
            s->q_tail = &s->q_head;
        pthread_mutex_unlock(&s->q_mu);
        handle_one(h, p);
        pthread_mutex_lock(&s->q_mu);
    }
    pthread_mutex_unlock(&s->q_mu);
    return NULL;
}

/* Writer thread: the job's batch is durable (or failed); queue it for its worker. */
static void on_committed(kbs_commit_job *j, void *arg)
{
    (void)j;
    pending *p = arg;
    p->w->kick = true;
    worker_done_queue(p);
}

/* Writer thread, after a batch: one wake-up per worker with replies, not one per reply. */
static void on_batch(void *arg)
{
    kbs_server *s = arg;
    for (unsigned i = 0; i < s->nworkers; i++)
        if (s->workers[i].kick) {
            s->workers[i].kick = false;
            event_active(s->workers[i].done_ev, EV_READ, 0);
        }
}

static void free_pending(pending *p)
{
    kbs__commit_job_clear(&p->job);
    kbs_response_clear(&p->resp);
    free(p);
}

/*
 * A reply whose audit entries could not be written (store full or failing) does not leave as it
 * was: what it carried (a token, a released secret, a new challenge) would be a decision with no
 * record. The client gets 503 and may retry once the store works again.
 */
static void unaudited_reply(kbs_response *r, size_t entries)
{
    log_error("audit: %zu audit entries could not be written (see the error above); the reply "
              "is withheld (503)",
              entries);
    kbs_response_clear(r);
    buf_init(&r->body, 1u << 16, true);
    buf_puts(&r->body, "{\"type\":\"https://github.com/confidential-containers/kbs/errors/"
                       "StorageError\",\"title\":\"StorageError\",\"status\":503,\"detail\":"
                       "\"the audit log could not be written; the decision is withheld, try "
                       "again later\"}");
    r->status = 503;
    r->content_type = "application/problem+json";
}

/* ---- connections ---- */

static int conn_process(conn *c);

static void conn_set_reading(conn *c, bool on)
{
    if (c->reading != on)
        on ? event_add(c->rev, NULL) : event_del(c->rev);
    c->reading = on;
}

static void conn_set_writing(conn *c, bool on)
{
    if (c->writing != on)
        on ? event_add(c->wev, NULL) : event_del(c->wev);
    c->writing = on;
}

static uint64_t conn_timeout_ms(const conn *c)
{
    return (uint64_t)c->w->s->cfg->timeout * 1000;
}

/* Overwrite and free: a buffer may hold tokens, evidence or a resource value. */
static void free_cleansed(uint8_t *p, size_t n)
{
    if (p) {
        OPENSSL_cleanse(p, n);
        free(p);
    }
}

/*
 * Free at once, with no TLS close_notify (the connection failed, or its client is gone). While
 * a request of it is out (@busy: a handler may be reading its body in @in, and finish() will
 * come back to it) the connection is only shut and marked dead; finish() frees it. Nothing
 * should get here with a busy connection (no read, write or deadline is pending while one is
 * out), but a slip must not become a use-after-free.
 */
static void conn_free(conn *c)
{
    worker *w = c->w;
    if (c->busy) {
        if (!c->dead) {
            c->dead = true;
            conn_set_reading(c, false);
            conn_set_writing(c, false);
            event_del(c->rev); /* also out of the active queue (event_active) */
            shutdown(c->fd, SHUT_RDWR);
            c->deadline = 0;
        }
        return;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->rev);
    event_free(c->wev);
    SSL_free(c->ssl); /* releases the connection's per-peer count (peer_ticket_free()) */
    close(c->fd);
    free_cleansed(c->in, c->in_cap);
    free_cleansed(c->out, c->out_cap);
    free(c);
}

/* Close on our side: a TLS close_notify first when the session is sound (best effort). */
static void conn_close(conn *c)
{
    if (c->ssl && c->handshaken) {
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    conn_free(c);
}

/* Read and drop what the client still sends after our error reply (RFC 9112 §9.6). */
static void conn_drain(conn *c)
{
    char scratch[4096];
    ssize_t n = 0;
    /* at most 64 KiB per wake-up (level-triggered: the loop comes back for the rest) */
    for (int i = 0; i < 16 && (n = recv(c->fd, scratch, sizeof(scratch), 0)) > 0; i++)
        ;
    OPENSSL_cleanse(scratch, sizeof(scratch)); /* a pipelined request may carry a token */
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        conn_free(c); /* the client closed too, or the connection failed */
}

/* The reply is written: serve the next request, or close. -1 when @c is gone. */
static int conn_replied(conn *c)
{
    conn_set_writing(c, false);
    if (c->closing) {
        /* bytes of the client not read yet would make close() send a reset, which can destroy
         * the reply in flight: linger then, as after an error */
        if (!c->linger && !c->in_len && !(c->ssl && SSL_has_pending(c->ssl))) {
            conn_close(c);
            return -1;
        }
        if (c->ssl && c->handshaken) {
            SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
        shutdown(c->fd, SHUT_WR);
        c->lingering = true;
        c->deadline = now_ms() + LINGER_MS;
        conn_set_reading(c, true);
        return 0;
    }
    conn_set_reading(c, true);
    c->idle = c->in_len == 0;
    c->deadline = now_ms() + conn_timeout_ms(c);
    /* A request already in the buffer (pipelined), or records OpenSSL has read ahead: served
     * from the event loop (conn_on_read()), not from here, so that a run of pipelined requests
     * answered inline is a loop, not a recursion. */
    if (c->in_len || (c->ssl && SSL_has_pending(c->ssl)))
        event_active(c->rev, EV_READ, 1);
    return 0;
}

/* Write what is left of the reply. -1 when @c is gone. */
static int conn_flush(conn *c)
{
    while (c->out_off < c->out_len) {
        size_t left = c->out_len - c->out_off, n = 0;
        if (c->ssl) {
            ERR_clear_error();
            int rc = SSL_write_ex(c->ssl, c->out + c->out_off, left, &n);
            if (rc <= 0) {
                int e = SSL_get_error(c->ssl, rc);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    /* TLS needs the socket writable (or, rarely, a record read first: the
                     * write event fires on a writable socket and retries either way) */
                    conn_set_writing(c, true);
                    return 0;
                }
                ERR_clear_error();
                conn_free(c);
                return -1;
            }
        } else {
            ssize_t w = send(c->fd, c->out + c->out_off, left, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    conn_set_writing(c, true);
                    return 0;
                }
                conn_free(c);
                return -1;
            }
            n = (size_t)w;
        }
        c->out_off += n;
    }
    OPENSSL_cleanse(c->out, c->out_len);
    c->out_len = c->out_off = 0;
    if (c->out_cap > 4 * CONN_IN_INITIAL) { /* an idle connection keeps a small buffer */
        free_cleansed(c->out, c->out_cap);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (c->interim) {
        c->interim = false;
        conn_set_writing(c, false);
        conn_set_reading(c, true); /* the body comes now (or came: OpenSSL may hold it) */
        if (c->in_len || (c->ssl && SSL_has_pending(c->ssl)))
            event_active(c->rev, EV_READ, 1);
        return 0;
    }
    return conn_replied(c);
}

/* Room for @n more bytes of reply. */
static uint8_t *conn_out_reserve(conn *c, size_t n)
{
    if (c->out_cap - c->out_len < n) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap - c->out_len < n)
            cap *= 2;
        uint8_t *p = xmalloc(cap);
        if (c->out_len)
            memcpy(p, c->out, c->out_len);
        free_cleansed(c->out, c->out_cap);
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

static void conn_out_put(conn *c, const void *p, size_t n)
{
    memcpy(conn_out_reserve(c, n), p, n);
    c->out_len += n;
}

static void conn_out_puts(conn *c, const char *s)
{
    conn_out_put(c, s, strlen(s));
}

/* "Date: <IMF-fixdate>\r\n", formatted once per second per worker. */
static const char *worker_date(worker *w)
{
    time_t t = time(NULL);
    if (t != w->date_t) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(w->date, sizeof(w->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        w->date_t = t;
    }
    return w->date;
}

/* The request at the start of @in is answered: overwrite it (it may hold a token, evidence, a
 * resource value) and move what follows it (a pipelined request) to the front. */
static void conn_consume(conn *c)
{
    size_t n = c->req.head_len + (size_t)c->req.content_length;
    size_t rest = c->in_len - n;
    OPENSSL_cleanse(c->in, n);
    if (rest) {
        memmove(c->in, c->in + n, rest);
        OPENSSL_cleanse(c->in + rest, n);
    }
    c->in_len = rest;
    c->have_head = false;
    c->scanned = 0;
    /* An idle connection keeps a small buffer, not the 2 MiB of an admin's last upload. */
    if (!rest && c->in_cap > 4 * CONN_IN_INITIAL) {
        free_cleansed(c->in, c->in_cap);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/*
 * Queue the reply @status with @content_type and @body (and @set_cookie / @extra header
 * lines, or NULL) and start writing it. A small reply is one SSL_write, so one TLS record and
 * one send(2). -1 when @c is gone.
 */
static int conn_reply(conn *c, int status, const char *content_type, const uint8_t *body,
                      size_t body_size, const char *set_cookie, const char *extra)
{
    char line[96];
    bool keep = !c->closing && c->have_head && c->req.keep_alive && !c->w->stopping;
    if (!keep)
        c->closing = true;
    snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, kbs_http_reason(status));
    conn_out_puts(c, line);
    if (content_type) {
        conn_out_puts(c, "Content-Type: ");
        conn_out_puts(c, content_type);
        conn_out_puts(c, "\r\n");
    }
    conn_out_puts(c, "Cache-Control: no-store\r\n");
    if (set_cookie) {
        conn_out_puts(c, "Set-Cookie: ");
        conn_out_puts(c, set_cookie);
        conn_out_puts(c, "\r\n");
    }
    if (extra)
        conn_out_puts(c, extra);
    conn_out_puts(c, worker_date(c->w));
    snprintf(line, sizeof(line), "Content-Length: %zu\r\n%s\r\n", body_size,
             !keep               ? "Connection: close\r\n"
             : c->req.minor == 0 ? "Connection: keep-alive\r\n"
                                 : "");
    conn_out_puts(c, line);
    if (body_size)
        conn_out_put(c, body, body_size);
    if (c->have_head)
        conn_consume(c);
    c->interim = false; /* a 100 Continue still queued goes first, as part of this reply */
    c->deadline = now_ms() + conn_timeout_ms(c); /* for a client that does not read it */
    return conn_flush(c);
}

/* Refuse the request at hand with @status (a problem document) and close. -1: @c is gone. */
static int conn_error(conn *c, int status, const char *detail)
{
    char body[320];
    int n = snprintf(body, sizeof(body),
                     "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"}",
                     kbs_http_reason(status), status, detail);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = 0;
    c->closing = true;
    c->linger = true;
    c->have_head = false; /* nothing of it is consumed: the connection ends */
    return conn_reply(c, status, "application/problem+json", (const uint8_t *)body, (size_t)n, NULL,
                      status == 405 ? "Allow: GET, POST, PUT, DELETE\r\n" : NULL);
}

static const char *method_name(kbs_http_span m)
{
    static const char *const known[] = {"GET", "POST", "PUT", "DELETE"};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (m.n == strlen(known[i]) && !memcmp(m.s, known[i], m.n))
            return known[i];
    return NULL;
}

/* A header value as a C string, in place: the byte after it (CR, LF or a blank) is not needed. */
static const char *span_str(kbs_http_span v)
{
    if (!v.s)
        return NULL;
    ((char *)v.s)[v.n] = '\0';
    return v.s;
}

/* The complete request at the start of @in goes to a handler (or runs here). -1: @c is gone. */
static int conn_dispatch(conn *c)
{
    worker *w = c->w;
    kbs_http_span target = c->req.target, query;
    /* The decoded path is never longer than the raw one: decoded in place, NUL where the blank
     * after the target was. */
    char *path = (char *)target.s;
    if (!kbs_http_split_target(path, target.n + 1, &query, target))
        return conn_error(c, 400, "the request path is not a valid percent-encoded path");
    if (query.s)
        ((char *)query.s)[query.n] = '\0';
    pending *p = xzalloc(sizeof(*p));
    __atomic_add_fetch(&w->s->inflight, 1, __ATOMIC_RELAXED);
    p->w = w;
    p->c = c;
    p->req = (kbs_request){
        .method = method_name(c->req.method),
        .path = path,
        .query = query.s,
        .cookie = span_str(c->req.cookie),
        .authorization = span_str(c->req.authorization),
        .body = c->req.content_length ? c->in + c->req.head_len : (const uint8_t *)"",
        .body_size = (size_t)c->req.content_length,
        .peer = c->peer,
        .tls = c->ssl != NULL,
    };
    c->busy = p;
    c->deadline = 0;
    if (runs_inline(w, &p->req))
        return handle_inline(w, p);
    queue_push(w->s, p);
    return 0;
}

/* Enough room in @in for @need bytes. */
static void conn_in_reserve(conn *c, size_t need)
{
    if (need <= c->in_cap)
        return;
    size_t cap = c->in_cap ? c->in_cap : CONN_IN_INITIAL;
    while (cap < need)
        cap *= 2;
    if (cap > CONN_IN_MAX)
        cap = CONN_IN_MAX;
    uint8_t *p = xmalloc(cap);
    if (c->in_len)
        memcpy(p, c->in, c->in_len);
    if (c->have_head) { /* the parsed head points into @in: move its spans along */
        kbs_http_span *spans[] = {&c->req.method, &c->req.target, &c->req.cookie,
                                  &c->req.authorization};
        for (size_t i = 0; i < sizeof(spans) / sizeof(spans[0]); i++)
            if (spans[i]->s)
                spans[i]->s = (const char *)p + (spans[i]->s - (const char *)c->in);
    }
    free_cleansed(c->in, c->in_cap);
    c->in = p;
    c->in_cap = cap;
}

/*
 * Whether @in may hold the end of a request head (an empty line), looking only at what came
 * since the last look: a head that trickles in a few bytes at a time is scanned once instead
 * of parsed again from its start at every read (quadratic in its size).
 */
static bool head_may_be_complete(conn *c)
{
    size_t from = c->scanned > 2 ? c->scanned - 2 : 0;
    const uint8_t *p = c->in + from, *end = c->in + c->in_len;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if ((p + 1 < end && p[1] == '\n') || (p + 2 < end && p[1] == '\r' && p[2] == '\n'))
            return true;
        p++;
    }
    c->scanned = c->in_len;
    return false;
}

/*
 * Parse what @in holds: dispatch a complete request, or refuse a bad one. 0 when waiting (for
 * bytes or for the reply), -1 when @c is gone.
 */
static int conn_process(conn *c)
{
    /* One request at a time: none while one is out, or while its reply is being written. */
    if (c->busy || c->closing || !c->in_len || (c->out_len && !c->interim))
        return 0;
    if (!c->have_head) {
        if (!head_may_be_complete(c))
            return c->in_len >= KBS_HTTP_HEAD_MAX
                       ? conn_error(c, 431, "the request head is too large")
                       : 0;
        int r = kbs_http_parse_head(&c->req, (const char *)c->in, c->in_len);
        if (r == 0) {
            c->scanned = c->in_len;
            return 0;
        }
        if (r < 0)
            return conn_error(c, -r,
                              -r == 431   ? "the request head is too large"
                              : -r == 414 ? "the request target is too long"
                              : -r == 501 ? "only bodies with a Content-Length are accepted"
                              : -r == 505 ? "only HTTP/1.1 and HTTP/1.0 are spoken"
                              : -r == 417 ? "only \\\"Expect: 100-continue\\\" is understood"
                                          : "malformed HTTP request");
        c->have_head = true;
        if (!method_name(c->req.method)) {
            c->have_head = false;
            return conn_error(c, 405, "only GET, POST, PUT and DELETE are served");
        }
        if (c->req.content_length > KBS_MAX_BODY) {
            c->have_head = false;
            return conn_error(c, 413, "the request body is larger than the KBS accepts");
        }
        size_t need = c->req.head_len + (size_t)c->req.content_length;
        conn_in_reserve(c, need);
        if (c->in_len < need && c->req.expect_continue && c->req.minor >= 1) {
            /* an interim response: conn_flush() must not take it for the reply */
            conn_out_puts(c, "HTTP/1.1 100 Continue\r\n\r\n");
            c->interim = true;
            if (conn_flush(c) < 0)
                return -1;
        }
    }
    if (c->in_len < c->req.head_len + c->req.content_length)
        return 0;
    return conn_dispatch(c);
}

/*
 * Read what the socket has (one read(2) with OpenSSL reading ahead) and process it, until the
 * socket has nothing more or a request is complete. Never more than the request at hand needs
 * (its head, at most KBS_HTTP_HEAD_MAX bytes, then its body): pipelined requests wait in the
 * socket or in OpenSSL, so @in holds at most one request and a little more, and moving what
 * follows a request after its reply stays cheap. At most CONN_READS_PER_WAKE reads per call:
 * a client that never stops sending does not hold its worker; the loop comes back to it.
 */
static void conn_read(conn *c)
{
    for (int reads = 0;; reads++) {
        size_t want =
            c->have_head ? c->req.head_len + (size_t)c->req.content_length : KBS_HTTP_HEAD_MAX;
        if (c->in_len >= want)
            return; /* a whole request waits for the reply before it (conn_replied()) */
        if (reads == CONN_READS_PER_WAKE) {
            event_active(c->rev, EV_READ, 1); /* the rest on the next turn of the loop */
            return;
        }
        size_t grow = c->in_len + CONN_IN_INITIAL / 2;
        conn_in_reserve(c, c->have_head || grow > want ? want : grow);
        size_t room = (c->in_cap < want ? c->in_cap : want) - c->in_len, n = 0;
        if (c->ssl) {
            ERR_clear_error();
            if (SSL_read_ex(c->ssl, c->in + c->in_len, room, &n) <= 0) {
                int e = SSL_get_error(c->ssl, 0);
                if (e == SSL_ERROR_WANT_WRITE) {
                    /* (a TLS 1.3 key update's answer) no reading until the socket takes it,
                     * or a readable socket would call us again and again */
                    conn_set_reading(c, false);
                    conn_set_writing(c, true); /* conn_on_write() reads again */
                } else if (e != SSL_ERROR_WANT_READ) {
                    ERR_clear_error();
                    if (e == SSL_ERROR_ZERO_RETURN) /* the client's close_notify */
                        conn_close(c);
                    else
                        conn_free(c);
                }
                return;
            }
        } else {
            ssize_t r = recv(c->fd, c->in + c->in_len, room, 0);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                    return;
                conn_free(c);
                return;
            }
            n = (size_t)r;
        }
        if (c->idle) { /* the first bytes of a request: its own deadline */
            c->idle = false;
            c->deadline = now_ms() + conn_timeout_ms(c);
        }
        c->in_len += n;
        if (conn_process(c) < 0 || c->busy || c->closing || (c->out_len && !c->interim))
            return; /* gone, a request out, or its reply blocked: nothing more to read now */
        if (n < room && !(c->ssl && SSL_has_pending(c->ssl)))
            return; /* level-triggered: the loop calls again when more comes */
    }
}

/* TLS handshake steps, as the socket allows. */
static void conn_handshake(conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->handshaken = true;
        c->idle = true;
        c->deadline = now_ms() + conn_timeout_ms(c);
        conn_set_writing(c, false);
        conn_read(c); /* the client's first request may have come with its Finished */
        return;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        conn_set_writing(c, e == SSL_ERROR_WANT_WRITE);
        return;
    }
    ERR_clear_error(); /* refused by the per-peer limits, or a failed handshake */
    conn_free(c);
}

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    if (c->lingering)
        conn_drain(c);
    else if (!c->handshaken)
        conn_handshake(c);
    else if (c->busy || c->closing || c->out_len)
        /* bytes before our reply (pipelined, or the client closing): read after it */
        conn_set_reading(c, false);
    else {
        /* a request already in @in (pipelined: see conn_replied()) first */
        if (c->in_len && conn_process(c) < 0)
            return;
        if (!c->busy && !c->closing)
            conn_read(c);
    }
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    if (!c->handshaken)
        conn_handshake(c);
    else if (c->out_len)
        conn_flush(c);
    else {
        conn_set_writing(c, false);
        conn_set_reading(c, true);
        if (!c->busy && !c->closing)
            conn_read(c); /* SSL_read wanted to write (a TLS 1.3 key update's reply) */
    }
}

static void conn_new(worker *w, int fd, const struct sockaddr *sa, socklen_t salen)
{
    conn *c = xzalloc(sizeof(*c));
    c->w = w;
    c->fd = fd;
    memcpy(&c->sa, sa, salen < sizeof(c->sa) ? salen : sizeof(c->sa));
    c->salen = salen;
    char h[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, h, sizeof(h));
        snprintf(c->peer, sizeof(c->peer), "%s:%u", h, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof(h));
        snprintf(c->peer, sizeof(c->peer), "[%s]:%u", h, ntohs(in6->sin6_port));
    }
    c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST, conn_on_write, c);
    if (w->s->ssl) {
        c->ssl = SSL_new(w->s->ssl);
        BIO *b = c->ssl ? httpc_socket_bio(fd) : NULL;
        if (b) {
            SSL_set_bio(c->ssl, b, b);
            SSL_set_app_data(c->ssl, c); /* on_client_hello() */
            SSL_set_accept_state(c->ssl);
        }
        if (!b) {
            SSL_free(c->ssl);
            c->ssl = NULL;
            c->fd = -1;
        }
    } else {
        c->handshaken = true;
        c->idle = true;
    }
    if (!c->rev || !c->wev || c->fd < 0) {
        log_error("KBS: out of memory for a new connection; it is closed");
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        SSL_free(c->ssl);
        close(fd);
        free(c);
        return;
    }
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    c->deadline = now_ms() + conn_timeout_ms(c);
    conn_set_reading(c, true);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    worker *w = arg;
    /* A bounded batch per wake-up: the other workers take their share of a burst. */
    for (int i = 0; i < 32; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the backlog stays readable: without a pause the loop would spin on it */
                struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
                event_del(w->listen_ev);
                event_add(w->accept_ev, &tv);
                static uint64_t last;
                uint64_t t = now_ms();
                if (t - __atomic_load_n(&last, __ATOMIC_RELAXED) > 10000) {
                    __atomic_store_n(&last, t, __ATOMIC_RELAXED);
                    log_warn("KBS: cannot accept a connection: %s (raise the descriptor limit, "
                             "or lower limits.connections_per_peer)",
                             strerror(errno));
                }
            }
            return; /* EAGAIN: another worker took it, or the backlog is empty */
        }
        conn_new(w, cfd, (struct sockaddr *)&ss, sl);
    }
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    if (w->listen_ev)
        event_add(w->listen_ev, NULL);
}

/* Every SWEEP_MS: connections past their deadline (see the top of the file) are closed. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    uint64_t t = now_ms();
    for (conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline && t >= c->deadline) {
            if (c->lingering || c->out_len || !c->handshaken)
                conn_free(c);
            else
                conn_close(c);
        }
    }
}

/* Worker thread: the reply of a request done with (its audit entries durable, if any). -1
 * when its connection is gone (closed after the reply, or failed). */
static int finish(pending *p)
{
    if (p->job.result < 0)
        unaudited_reply(&p->resp, p->job.count);
    conn *c = p->c;
    kbs_response *r = &p->resp;
    c->busy = NULL;
    if (c->dead) { /* failed meanwhile (see conn_free()): the reply has nowhere to go */
        __atomic_sub_fetch(&p->w->s->inflight, 1, __ATOMIC_RELAXED);
        free_pending(p);
        conn_free(c);
        return -1;
    }
    int status = r->status ? r->status : 500;
    __atomic_sub_fetch(&p->w->s->inflight, 1, __ATOMIC_RELAXED);
    int rc =
        conn_reply(c, status, r->content_type, r->body.data, r->body.size, r->set_cookie, NULL);
    free_pending(p);
    return rc;
}

static int handle_inline(worker *w, pending *p)
{
    return run_request(w->s, w->ctx, p) ? 0 : finish(p);
}

/* Worker thread: send the replies whose audit entries are durable. */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    pthread_mutex_lock(&w->done_mu);
    pending *p = w->done_head;
    w->done_head = NULL;
    pthread_mutex_unlock(&w->done_mu);
    while (p) {
        pending *next = p->next;
        finish(p);
        p = next;
    }
}

/* ---- workers ---- */

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    w->stopping = true;
    if (w->listen_ev) {
        event_free(w->listen_ev);
        w->listen_ev = NULL;
        event_del(w->accept_ev);
    }
    /* Idle connections close now; one with a request out closes after its reply. */
    for (conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (!c->busy && !c->out_len)
            c->lingering ? conn_free(c) : conn_close(c);
    }
    event_del(w->stop_ev);
    struct timeval tv = {1, 0};
    event_base_loopexit(w->base, &tv);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    event_base_dispatch(w->base);
    return NULL;
}

static int worker_setup(worker *w, kbs_server *s, cista_error **err)
{
    w->s = s;
    w->listen_fd = -1;
    pthread_mutex_init(&w->done_mu, NULL);
    w->done_mu_init = true;
    w->base = event_base_new();
    if (!w->base)
        return err_set(err, -ENOMEM, "libevent: cannot create an event base");
    w->listen_fd = fcntl(s->listen_fd, F_DUPFD_CLOEXEC, 0);
    if (w->listen_fd < 0)
        return err_set_sys(err, -errno, "dup listening socket");
    w->listen_ev = event_new(w->base, w->listen_fd, EV_READ | EV_PERSIST, on_accept, w);
    w->stop_ev = event_new(w->base, s->stop_pipe[0], EV_READ | EV_PERSIST, on_stop, w);
    w->sweep_ev = event_new(w->base, -1, EV_PERSIST, on_sweep, w);
    w->accept_ev = event_new(w->base, -1, 0, on_accept_resume, w);
    w->done_ev = event_new(w->base, -1, 0, on_done, w);
    struct timeval sweep = {0, SWEEP_MS * 1000};
    if (!w->listen_ev || !w->stop_ev || !w->sweep_ev || !w->done_ev || !w->accept_ev ||
        event_add(w->listen_ev, NULL) < 0 || event_add(w->stop_ev, NULL) < 0 ||
        event_add(w->sweep_ev, &sweep) < 0)
        return err_set(err, -ENOMEM, "libevent: cannot set up a worker's events");
    return 0;
}

static void worker_teardown(worker *w)
{
    if (!w->s)
        return; /* never set up */
    /* The committer is gone: replies it completed after the loop ended are dropped, and so are
     * the connections still open (conn_free() does not touch their requests). */
    for (pending *p = w->done_head, *next; p; p = next) {
        next = p->next;
        free_pending(p);
    }
    w->done_head = NULL;
    while (w->conns) {
        w->conns->busy = NULL; /* its request was freed above or by handlers_stop() */
        conn_free(w->conns);
    }
    if (w->done_ev)
        event_free(w->done_ev);
    if (w->done_mu_init)
        pthread_mutex_destroy(&w->done_mu);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->sweep_ev)
        event_free(w->sweep_ev);
    if (w->accept_ev)
        event_free(w->accept_ev);
    if (w->listen_ev)
        event_free(w->listen_ev);
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    if (w->base)
        event_base_free(w->base);
}

/* Stop the handlers (each finishes its current request) and drop requests never started. */
static void handlers_stop(kbs_server *s)
{
    if (!s->q_init)
        return;
    pthread_mutex_lock(&s->q_mu);
    s->q_stop = true;
    pthread_cond_broadcast(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    for (unsigned i = 0; i < s->nhandlers; i++) {
        if (s->handlers[i].started)
            pthread_join(s->handlers[i].th, NULL);
        s->handlers[i].started = false;
    }
    for (pending *p = s->q_head, *next; p; p = next) {
        next = p->next;
        free_pending(p);
    }
    s->q_head = NULL;
    s->q_tail = &s->q_head;
}

int kbs_server_new(kbs_server **out, const kbs_config *cfg, cista_error **err)
{
    pthread_once(&g_evthread_once, evthread_init);
    kbs_server *s = xzalloc(sizeof(*s));
    s->cfg = cfg;
    s->listen_fd = -1;
    s->stop_pipe[0] = s->stop_pipe[1] = -1;
    int r;
    if ((r = kbs__shared_new(&s->sh, cfg, err)) < 0)
        goto fail;
    {
        /* Create the schema once, before the workers connect. */
        kbs_ctx *c = NULL;
        if ((r = kbs__ctx_new(&c, s->sh, true, err)) < 0)
            goto fail;
        /* The audit writer's own connection (group commit). */
        kbs_store *st = steal_ptr(&c->store);
        kbs_ctx_free(c);
        if ((r = kbs__committer_new(&s->committer, st, err)) < 0) {
            kbs_store_close(st);
            goto fail;
        }
    }
    if ((r = make_ssl(s, err)) < 0 || (r = open_listener(s, err)) < 0)
        goto fail;
    if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        r = err_set_sys(err, -errno, "pipe");
        goto fail;
    }
    s->nworkers = cfg->workers ? cfg->workers : util_cpu_count();
    s->workers = xzalloc(s->nworkers * sizeof(worker));
    for (unsigned i = 0; i < s->nworkers; i++)
        if ((r = worker_setup(&s->workers[i], s, err)) < 0)
            goto fail;
    kbs__committer_on_batch(s->committer, on_batch, s);
    kbs__committer_set_inflight(s->committer, &s->inflight);
    if (s->peers) {
        s->peers_ev = event_new(s->workers[0].base, -1, EV_PERSIST, on_peers_summary, s);
        struct timeval tv = {KBS_PEERS_LOG_INTERVAL_MS / 1000, 0};
        if (!s->peers_ev || event_add(s->peers_ev, &tv) < 0) {
            r = err_set(err, -ENOMEM, "libevent: cannot add the per-peer limits' timer");
            goto fail;
        }
    }
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, NULL);
    s->q_tail = &s->q_head;
    s->q_init = true;
    s->nhandlers = s->nworkers;
    s->handlers = xzalloc(s->nhandlers * sizeof(handler));
    for (unsigned i = 0; i < s->nhandlers; i++) {
        s->handlers[i].s = s;
        if ((r = kbs__ctx_new(&s->handlers[i].ctx, s->sh, false, err)) < 0)
            goto fail;
        s->handlers[i].ctx->defer_audit = true;
    }
    /* Local store and sessions: nothing a cheap request does can wait on the network. */
    if (!strcmp(cfg->store, "sqlite") && !strcmp(cfg->sessions, "memory"))
        for (unsigned i = 0; i < s->nworkers; i++) {
            if ((r = kbs__ctx_new(&s->workers[i].ctx, s->sh, false, err)) < 0)
                goto fail;
            s->workers[i].ctx->defer_audit = true;
        }
    *out = s;
    return 0;
fail:
    kbs_server_free(s);
    return err_wrap(err, "KBS server");
}

int kbs_server_run(kbs_server *s, cista_error **err)
{
    log_info("KBS listening on %s (%s, %u I/O workers, %u request handlers, store %s)", s->addr,
             s->ssl ? "TLS" : "plain HTTP", s->nworkers, s->nhandlers, s->cfg->store);
    if (s->peers)
        log_info("KBS per-peer limits: %u TLS connections, %u TLS handshakes/s after a burst of "
                 "%u (0: unlimited); a peer is an IPv4 address or an IPv6 /%u",
                 s->cfg->conns_per_peer, s->cfg->handshakes_per_peer, s->cfg->handshake_burst,
                 s->cfg->peer_ipv6_prefix);
    for (unsigned i = 0; i < s->nhandlers; i++) {
        int rc = pthread_create(&s->handlers[i].th, NULL, handler_main, &s->handlers[i]);
        if (rc != 0) {
            handlers_stop(s);
            return err_set(err, -rc, "cannot start request handler thread %u", i);
        }
        s->handlers[i].started = true;
    }
    for (unsigned i = 0; i < s->nworkers; i++) {
        int rc = pthread_create(&s->workers[i].th, NULL, worker_main, &s->workers[i]);
        if (rc != 0) {
            kbs_server_stop(s);
            for (unsigned j = 0; j < i; j++)
                pthread_join(s->workers[j].th, NULL);
            handlers_stop(s);
            return err_set(err, -rc, "cannot start worker thread %u", i);
        }
        s->workers[i].started = true;
    }
    for (unsigned i = 0; i < s->nworkers; i++) {
        pthread_join(s->workers[i].th, NULL);
        s->workers[i].started = false;
    }
    handlers_stop(s);
    uint64_t batches = 0, entries = 0;
    kbs__committer_stats(s->committer, &batches, &entries);
    log_info("KBS stopped (audit: %llu entries in %llu commits)", (unsigned long long)entries,
             (unsigned long long)batches);
    return 0;
}

void kbs_server_stop(kbs_server *s)
{
    if (s && s->stop_pipe[1] >= 0) {
        char b = 1;
        ssize_t n = write(s->stop_pipe[1], &b, 1);
        (void)n;
    }
}

const char *kbs_server_address(const kbs_server *s)
{
    return s->addr;
}

void kbs_server_free(kbs_server *s)
{
    if (!s)
        return;
    /* Handlers first (they submit to the committer), then commit what is queued (its callbacks
     * still reach the workers' queues), then the workers. */
    handlers_stop(s);
    kbs__committer_free(s->committer);
    for (unsigned i = 0; s->handlers && i < s->nhandlers; i++)
        kbs_ctx_free(s->handlers[i].ctx);
    for (unsigned i = 0; s->workers && i < s->nworkers; i++)
        kbs_ctx_free(s->workers[i].ctx);
    free(s->handlers);
    if (s->q_init) {
        pthread_mutex_destroy(&s->q_mu);
        pthread_cond_destroy(&s->q_cv);
    }
    if (s->peers_ev)
        event_free(s->peers_ev);
    for (unsigned i = 0; s->workers && i < s->nworkers; i++)
        worker_teardown(&s->workers[i]);
    free(s->workers);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->stop_pipe[0] >= 0)
        close(s->stop_pipe[0]);
    if (s->stop_pipe[1] >= 0)
        close(s->stop_pipe[1]);
    if (s->ssl)
        SSL_CTX_free(s->ssl);
    /* after the workers: freeing their connections released every count */
    kbs_peers_free(s->peers);
    kbs__shared_free(s->sh);
    free(s);
}
