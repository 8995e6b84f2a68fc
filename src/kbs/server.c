/*
 * server.c - the KBS HTTP(S) server (see kbs.h): libevent's evhttp with
 * bufferevent_openssl for TLS 1.3 / 1.2. Two kinds of threads:
 *
 * - I/O workers, one per core, each with its own event base and evhttp, all
 *   accepting on one shared listening socket (each holds a dup of it). They
 *   do the network side only: accept, TLS handshakes and records, HTTP
 *   parsing, sending replies.
 * - Request handlers, one per core, each with its own store connection,
 *   taking parsed requests from ONE shared FIFO queue and running
 *   kbs_handle() (evidence verification, JWE, tokens, store reads).
 *
 * The split keeps the CPU-heavy work (a P-384 verify is ~0.5 ms) off the
 * event loops and balances it: a connection stays on the I/O worker that
 * accepted it, and with handlers inline one worker could own most busy
 * keep-alive connections while another idled, and every request queued
 * behind the verifies of its own worker (head-of-line blocking). Now any
 * idle handler takes the oldest request of any connection.
 *
 * Limits against hostile or slow clients: body size (KBS_MAX_BODY), header
 * size (16 KiB), a read/write timeout (config "timeout"), only GET, POST,
 * PUT and DELETE. kbs_server_stop() writes one byte to a pipe every worker
 * watches: each stops accepting, lets in-flight replies drain for up to one
 * second, and exits its loop.
 *
 * Group commit: handlers do not write their audit entries themselves; the
 * worker hands the entries of a request, together with its finished reply,
 * to one audit writer thread (commit.c) and serves other requests
 * meanwhile. The writer commits everything queued in one transaction (one
 * fsync) and then passes each job back to its worker (event_active on the
 * worker's base), which sends the reply: no reply leaves before its audit
 * entries are durable, and concurrent requests share an fsync.
 *
 * TLS: TLS 1.3 session tickets (one per handshake, stateless, keys shared
 * by all workers through the one SSL_CTX) let a returning client resume
 * without a certificate signature; HTTP/1.1 keep-alive lets a client run
 * auth, attest and resource on one connection.
 *
 * Per-peer limits (config "limits", peers.h): open TLS connections and TLS
 * handshakes per second of one client address, decided in the ClientHello
 * callback, before the handshake's key exchange and signature. Not in
 * make_bev(): evhttp calls it before it has the socket, and a NULL there
 * makes evhttp fall back to a plain-text connection. Plain HTTP has no
 * such hook and no per-peer limits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
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
#include "kbs/kbs_int.h"
#include "kbs/peers.h"
#include "util/log.h"
#include "util/util.h"

/* Replies up to this size (one TLS record's payload) leave in one TLS record. */
#define KBS_REPLY_COALESCE_MAX 16384

typedef struct worker worker;

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
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *stop_ev;
    bool started;
    /* finished replies (audit entries durable), waiting to be sent by this worker */
    pthread_mutex_t done_mu;
    bool done_mu_init;
    pending *done_head;
    struct event *done_ev;
    bool kick;    /* the writer queued replies and will activate done_ev (writer thread only) */
    kbs_ctx *ctx; /* cheap requests run on this thread (see runs_inline()); NULL: none do */
};

/*
 * One request from its parse on the I/O worker to its reply there. The handler thread reads
 * only what this struct owns, except the body, which lives in @hreq's input buffer: evhttp frees
 * that only with @hreq, and a connection that fails meanwhile just detaches @hreq (libevent
 * frees it when the reply is sent), so the body stays valid until send_reply().
 */
struct pending {
    kbs_commit_job job; /* first: the committer hands back &job */
    worker *w;
    struct evhttp_request *hreq;
    kbs_request req;
    char *path, *query, *cookie, *authorization; /* owned copies (authorization: a secret) */
    char peer[80];
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
 * peer_ticket_free() whenever that SSL is freed (bufferevent_openssl frees it with the
 * connection: close, timeout, error or server shutdown), which releases the count.
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
 * ClientHello callback: the first point of a handshake where the connection has its socket
 * (bufferevent_openssl has set the SSL's BIO) and nothing costly has been done: the key share
 * is computed and the certificate signed only after it returns. A refusal fails the handshake
 * with an internal_error alert and evhttp closes the connection. Called again for the second
 * ClientHello after a HelloRetryRequest: that handshake was decided on already.
 */
static int on_client_hello(SSL *ssl, int *al, void *arg)
{
    kbs_server *s = arg;
    if (SSL_get_ex_data(ssl, g_peer_idx))
        return SSL_CLIENT_HELLO_SUCCESS;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    kbs_peer_addr a;
    int fd = SSL_get_fd(ssl);
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0 ||
        !kbs_peer_addr_from_sockaddr(&a, (struct sockaddr *)&ss, sl)) {
        /* the client is gone already (ENOTCONN): nobody to serve */
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
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
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

static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    worker *w = arg;
    SSL *ssl = SSL_new(w->s->ssl);
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static void body_cleanup(const void *data, size_t size, void *extra)
{
    (void)extra;
    crypto_free_secret((void *)data, size);
}

static const char *reason_phrase(int st)
{
    switch (st) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 503:
        return "Service Unavailable";
    default:
        return st >= 500 ? "Internal Server Error" : "Error";
    }
}

static void send_reply(struct evhttp_request *hreq, kbs_response *rp);
static void on_committed(kbs_commit_job *j, void *arg);
static void queue_push(kbs_server *s, pending *p);
static void handle_inline(worker *w, pending *p);

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

/* I/O worker: parse and check the request line, then queue it for a handler. */
static void on_request(struct evhttp_request *hreq, void *arg)
{
    worker *w = arg;
    const char *method;
    switch (evhttp_request_get_command(hreq)) {
    case EVHTTP_REQ_GET:
        method = "GET";
        break;
    case EVHTTP_REQ_POST:
        method = "POST";
        break;
    case EVHTTP_REQ_PUT:
        method = "PUT";
        break;
    case EVHTTP_REQ_DELETE:
        method = "DELETE";
        break;
    default:
        evhttp_send_error(hreq, 405, "Method Not Allowed");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(hreq);
    const char *raw_path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!raw_path || strlen(raw_path) > 1024) {
        evhttp_send_error(hreq, 400, "Bad Request");
        return;
    }
    size_t plen = 0;
    char *path = evhttp_uridecode(raw_path, 0, &plen);
    if (!path || strlen(path) != plen) {
        free(path);
        evhttp_send_error(hreq, 400, "Bad Request");
        return;
    }
    pending *p = xzalloc(sizeof(*p));
    __atomic_add_fetch(&w->s->inflight, 1, __ATOMIC_RELAXED);
    p->w = w;
    p->hreq = hreq;
    p->path = path;
    struct evkeyvalq *in = evhttp_request_get_input_headers(hreq);
    struct evbuffer *ib = evhttp_request_get_input_buffer(hreq);
    size_t blen = evbuffer_get_length(ib);
    const uint8_t *body = blen ? evbuffer_pullup(ib, (ev_ssize_t)blen) : (const uint8_t *)"";
    struct evhttp_connection *conn = evhttp_request_get_connection(hreq);
    if (conn) {
        const char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(conn, (char **)&addr, &port);
        snprintf(p->peer, sizeof(p->peer), "%s:%u", addr ? addr : "?", port);
    }
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL, *ck = evhttp_find_header(in, "Cookie"),
               *au = evhttp_find_header(in, "Authorization");
    p->query = q ? xstrdup(q) : NULL;
    p->cookie = ck ? xstrdup(ck) : NULL;
    p->authorization = au ? xstrdup(au) : NULL;
    p->req = (kbs_request){
        .method = method,
        .path = p->path,
        .query = p->query,
        .cookie = p->cookie,
        .authorization = p->authorization,
        .body = body,
        .body_size = blen,
        .peer = p->peer,
        .tls = w->s->ssl != NULL,
    };
    if (runs_inline(w, &p->req))
        handle_inline(w, p);
    else
        queue_push(w->s, p);
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
    worker_done_queue(p);
    event_active(p->w->done_ev, EV_READ, 0);
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
    free(p->path);
    free(p->query);
    free(p->cookie);
    if (p->authorization)
        crypto_free_secret(p->authorization, strlen(p->authorization));
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

/*
 * The request is done with: overwrite what libevent still holds of it before evhttp frees it
 * as is, the body (a resource value an admin PUT, evidence) and the Authorization header (a
 * token). Both are heap memory of @p->hreq, valid until the reply is sent.
 */
static void scrub_request(pending *p)
{
    if (p->req.body_size)
        crypto_cleanse((void *)p->req.body, p->req.body_size);
    struct evkeyvalq *in = evhttp_request_get_input_headers(p->hreq);
    char *au = in ? (char *)evhttp_find_header(in, "Authorization") : NULL;
    if (au)
        crypto_cleanse(au, strlen(au));
}

/* Worker thread: the reply of a request done with (its audit entries durable, if any). */
static void finish(pending *p)
{
    if (p->job.result < 0)
        unaudited_reply(&p->resp, p->job.count);
    scrub_request(p);
    send_reply(p->hreq, &p->resp);
    __atomic_sub_fetch(&p->w->s->inflight, 1, __ATOMIC_RELAXED);
    free_pending(p);
}

static void handle_inline(worker *w, pending *p)
{
    if (!run_request(w->s, w->ctx, p))
        finish(p);
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

/* Replace the @n bytes of @wire by one chain of our own (see send_reply()). */
static void join_reply(struct evbuffer *wire, size_t n)
{
    uint8_t *joined = xmalloc(n);
    if (evbuffer_copyout(wire, joined, n) != (ev_ssize_t)n || evbuffer_drain(wire, n) < 0) {
        /* frozen or short: sent as it is, in several records */
        crypto_free_secret(joined, n);
        return;
    }
    if (evbuffer_add_reference(wire, joined, n, body_cleanup, NULL) < 0) {
        crypto_free_secret(joined, n);
        log_error("KBS: a reply was lost (no memory to join it); its client will time out");
    }
}

static void send_reply(struct evhttp_request *hreq, kbs_response *rp)
{
    kbs_response resp = *rp;
    memset(rp, 0, sizeof(*rp));
    struct evkeyvalq *out = evhttp_request_get_output_headers(hreq);
    if (resp.content_type)
        evhttp_add_header(out, "Content-Type", resp.content_type);
    evhttp_add_header(out, "Cache-Control", "no-store");
    if (resp.set_cookie)
        evhttp_add_header(out, "Set-Cookie", resp.set_cookie);
    struct evbuffer *ob = evbuffer_new();
    size_t bsize = 0;
    uint8_t *bdata = buf_steal(&resp.body, &bsize);
    if (bdata && bsize)
        evbuffer_add_reference(ob, bdata, bsize, body_cleanup, NULL);
    else
        free(bdata);
    int status = resp.status ? resp.status : 500;
    struct evhttp_connection *conn = evhttp_request_get_connection(hreq);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    evhttp_send_reply(hreq, status, reason_phrase(status), ob);
    evbuffer_free(ob);
    kbs_response_clear(&resp);
    /*
     * evhttp leaves the status line and headers in one chain of the connection's output buffer
     * and the body in another, and bufferevent_openssl makes one SSL_write (one TLS record, one
     * send(2), one loopback delivery) per chain. Nothing is written before the event loop sees
     * the socket writable, so joining the chains here sends a small reply as one record. The
     * joined copy is ours, added by reference, and cleansed once sent as the body is: a reply
     * may carry a bearer token (evbuffer_pullup would leave it in a chain libevent frees as is).
     */
    if (bev) {
        struct evbuffer *wire = bufferevent_get_output(bev);
        size_t n = evbuffer_get_length(wire);
        if (n > 0 && n <= KBS_REPLY_COALESCE_MAX)
            join_reply(wire, n);
    }
}

/* ---- workers ---- */

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    if (w->bound) {
        evhttp_del_accept_socket(w->http, w->bound);
        w->bound = NULL;
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
    pthread_mutex_init(&w->done_mu, NULL);
    w->done_mu_init = true;
    w->base = event_base_new();
    w->http = w->base ? evhttp_new(w->base) : NULL;
    if (!w->http)
        return err_set(err, -ENOMEM, "libevent: cannot create an event base / evhttp");
    evhttp_set_max_body_size(w->http, KBS_MAX_BODY);
    evhttp_set_max_headers_size(w->http, 16384);
    evhttp_set_timeout(w->http, (int)s->cfg->timeout);
    evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE);
    evhttp_set_gencb(w->http, on_request, w);
    if (s->ssl)
        evhttp_set_bevcb(w->http, make_bev, w);
    int fd = fcntl(s->listen_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return err_set_sys(err, -errno, "dup listening socket");
    w->bound = evhttp_accept_socket_with_handle(w->http, fd);
    if (!w->bound) {
        close(fd);
        return err_set(err, -EIO, "libevent: cannot accept on the listening socket");
    }
    w->stop_ev = event_new(w->base, s->stop_pipe[0], EV_READ | EV_PERSIST, on_stop, w);
    event_add(w->stop_ev, NULL);
    w->done_ev = event_new(w->base, -1, 0, on_done, w);
    return 0;
}

static void worker_teardown(worker *w)
{
    /* The committer is gone: replies it completed after the loop ended are dropped (their
     * connections are closed below). */
    for (pending *p = w->done_head, *next; p; p = next) {
        next = p->next;
        free_pending(p);
    }
    w->done_head = NULL;
    if (w->done_ev)
        event_free(w->done_ev);
    if (w->done_mu_init)
        pthread_mutex_destroy(&w->done_mu);
    if (w->stop_ev)
        event_free(w->stop_ev);
    if (w->http)
        evhttp_free(w->http);
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
