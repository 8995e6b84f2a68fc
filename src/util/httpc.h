/*
 * httpc.h - a small HTTP/1.1 client over TCP or TLS (OpenSSL libssl), for the KBS client: one
 * origin per client, one request at a time, bodies in memory. It replaces libcurl, whose
 * dynamic loading cost every KBS-using process milliseconds and whose dependencies (krb5,
 * ldap, ssh2, ...) were all part of the TEE's trusted computing base.
 *
 * What it does: URLs http[s]://host[:port][/base] with a DNS name, an IPv4 address or an
 * [IPv6] literal; connections with a 10 s connect timeout and a per-request deadline enforced
 * on every read and write; TLS 1.2 or later with the peer always verified (a CA file and/or the
 * system store, never neither), the host name or IP address checked, SNI for names, and the
 * last TLS session resumed on reconnect; keep-alive: a kept-alive connection the server has
 * closed is replaced before a request is sent on it, and a request that fails on a reused one
 * before any byte of response is sent once more on a new one if it is idempotent (not a POST,
 * which the server may have applied); a cookie jar in memory
 * (name=value only, as a session cookie needs); proxies from the environment as curl reads them
 * (https_proxy / HTTPS_PROXY through a CONNECT tunnel, http_proxy, no_proxy / NO_PROXY; http://
 * proxies without credentials only).
 *
 * Trust: the server, and any proxy, is untrusted. TLS authenticates the server; every byte it
 * sends is parsed with hard bounds whether TLS verified it or not: a response head of at most
 * HTTPC_HEAD_MAX bytes and HTTPC_HEADERS_MAX lines, a body of at most the client's limit (4 MiB
 * unless set), chunk sizes and lengths checked for overflow, a bounded cookie jar. The parsers
 * below (response, URL, cookie, no_proxy) are pure functions over buffers, so unit tests and
 * fuzz/fuzz_http_response.c drive them with arbitrary bytes.
 *
 * Secrets: bearer tokens, request and response bodies and cookies may be secrets; every buffer
 * holding them is cleansed when freed. Response bodies handed out belong to the caller, who
 * cleanses them (crypto_free_secret()) when they are secret.
 *
 * Thread-safety: an httpc client is used by one thread at a time; separate clients share
 * nothing mutable (only the socket BIO method, made once per process). The pure functions are
 * thread-safe.
 */
#ifndef CISTA_HTTPC_H
#define CISTA_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/types.h>

#include "util/buf.h"
#include "util/err.h"

#define HTTPC_BODY_MAX_DEFAULT ((size_t)4 << 20) /* response body limit unless set */
#define HTTPC_HEAD_MAX ((size_t)64 << 10)        /* status line + header lines */
#define HTTPC_HEADERS_MAX 100                    /* header lines per head (and trailers) */
#define HTTPC_TIMEOUT_DEFAULT 30                 /* seconds per request */
#define HTTPC_CONNECT_TIMEOUT 10                 /* seconds per connection attempt */

/*
 * A BIO over the connected socket @fd (not closed with the BIO) that sends with MSG_NOSIGNAL,
 * so that a peer gone away is an EPIPE error, never a SIGPIPE in a process that did not ignore
 * it, and that reports @fd to SSL_get_fd(). For the KBS server's connections too. NULL: out of
 * memory.
 */
BIO *httpc_socket_bio(int fd);

/* ---- the client ---- */

typedef struct httpc httpc;

typedef struct {
    const char *url;     /* "https://kbs.example:8443" or with a base path: ".../prefix" */
    const char *ca_file; /* PEM CA(s) the server's certificate must chain to, or NULL */
    bool system_trust;   /* also (or only) the system trust store */
    long timeout;        /* seconds per request, connection included; 0: 30 */
    size_t body_max;     /* response body limit in bytes; 0: 4 MiB */
} httpc_opts;

/*
 * A client for the origin of @opts->url (copied; @opts is borrowed). https:// needs a CA file
 * or system_trust (-EINVAL otherwise); the CA store is loaded here, once (-EKEYREJECTED when the
 * CA file cannot be loaded). The proxy is chosen here from the environment; a proxy setting
 * that is not a plain http:// URL without credentials is -EINVAL. No connection is made yet.
 */
int httpc_new(httpc **out, const httpc_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));
/* Closes the connection and cleanses the cookies. NULL is a no-op. */
void httpc_free(httpc *c);
void httpc__freep(httpc **c);
#define _cleanup_httpc_ __attribute__((cleanup(httpc__freep)))

typedef struct {
    const char *method;       /* "GET", "POST", ... (a token) */
    const char *path;         /* appended to the URL's base path: "/kbs/v0/auth?x=1" */
    const char *bearer;       /* sent as "Authorization: Bearer <bearer>"; NULL: none */
    const void *body;         /* NULL: no body */
    size_t body_size;         /* bytes of @body */
    const char *content_type; /* of @body; NULL: application/json */
} httpc_req;

typedef struct {
    int status;       /* the final status code, 100-599 */
    uint8_t *body;    /* NUL-terminated, never NULL on success; the caller frees it */
    size_t body_size; /* without the NUL */
} httpc_resp;

/*
 * Send @req (borrowed) and read the final response into *out (the body is the caller's, see
 * httpc_resp). Any status is a success. The connection is kept for the next request unless the
 * server closes it (Connection: close, HTTP/1.0 without keep-alive, a close-delimited body).
 * A request on a reused connection that fails before any byte of the response arrived is sent
 * again, once, on a new connection. Errors name the method and URL: -ETIMEDOUT (the opts
 * timeout passed), -EKEYREJECTED (the server's certificate does not verify, with the reason),
 * -EMSGSIZE (the body is over the limit), -EPROTO (a malformed response), -ECONNREFUSED
 * (anything else on the way: name resolution, connect, proxy, TLS, I/O), -EINVAL (@req has a
 * bad method, path or header value).
 */
int httpc_request(httpc *c, httpc_resp *out, const httpc_req *req, cista_error **err)
    __attribute__((warn_unused_result));

/* Forget every cookie (cleansed). */
void httpc_cookies_clear(httpc *c);

/*
 * Close the connection: the next request opens a new one. With @forget_session, also drop the
 * kept TLS session and keep none from now on, so that every later handshake is a full one.
 */
void httpc_disconnect(httpc *c, bool forget_session);

/* ---- URLs ---- */

typedef struct {
    bool https;
    bool host_is_ip; /* an IPv4 or IPv6 literal (no SNI; the certificate must name the IP) */
    char *host;      /* without brackets: "kbs.example", "10.0.0.1", "::1" */
    uint16_t port;
    char *authority; /* "host:port" with the port always, IPv6 in brackets (CONNECT) */
    char *host_hdr;  /* the Host header: as authority, without the scheme's default port */
    char *base;      /* the base path without a trailing '/': "" or "/prefix" */
} httpc_url;

/*
 * Parse an http:// or https:// URL into *out (owned strings; httpc_url_clear() frees them).
 * -EINVAL, naming what is wrong, for any other scheme, credentials (user@), a query or
 * fragment, a bad host, IPv6 literal or port, spaces or control characters.
 */
int httpc_url_parse(httpc_url *out, const char *url, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * As httpc_url_parse(), for a proxy setting: the scheme may be left out (http:// is meant),
 * the default port is 1080, and only http:// without credentials or a path is accepted.
 */
int httpc_proxy_url_parse(httpc_url *out, const char *url, cista_error **err)
    __attribute__((warn_unused_result));
void httpc_url_clear(httpc_url *u);

/*
 * Whether @host (a name, an IPv4 or an IPv6 literal with or without brackets) is exempt from
 * the proxy by @no_proxy, a comma-separated list as curl reads it: "*" for every host, a name
 * matching itself and its subdomains (a leading '.' is ignored), an IP address matching
 * exactly, "ADDR/BITS" matching IP addresses in that range. Case-insensitive.
 */
bool httpc_no_proxy_match(const char *no_proxy, const char *host);

/* ---- cookies ---- */

#define HTTPC_COOKIES_MAX 32       /* cookies kept per client */
#define HTTPC_COOKIE_SIZE_MAX 4096 /* name + value bytes of one cookie */

typedef struct {
    char *name;
    char *value;
    time_t expires; /* 0: a session cookie */
} httpc_cookie;

typedef struct {
    httpc_cookie items[HTTPC_COOKIES_MAX];
    size_t count;
} httpc_jar;

/*
 * Apply one Set-Cookie header value received at @now: remember its name=value, replacing a
 * cookie of that name; Max-Age <= 0 or an Expires in the past removes it instead; other
 * attributes (Domain, Path, Secure, ...) are ignored, since a client talks to one origin.
 * -EINVAL for a malformed value, -EMSGSIZE for a cookie over HTTPC_COOKIE_SIZE_MAX bytes,
 * -ENOSPC when the jar is full; the jar is unchanged then. @j is zero-initialized to start.
 */
int httpc_jar_set(httpc_jar *j, const char *set_cookie, time_t now, cista_error **err)
    __attribute__((warn_unused_result));
/* "a=1; b=2" of the cookies not expired at @now, or NULL when there are none; caller frees. */
char *httpc_jar_header(const httpc_jar *j, time_t now);
/* Remove every cookie (cleansed). */
void httpc_jar_clear(httpc_jar *j);

/* ---- the response parser ---- */

/*
 * An incremental parser of one response, fed whatever the connection delivered: the status
 * line and headers (interim 1xx responses skipped), then the body framed by Content-Length,
 * Transfer-Encoding: chunked (extensions and trailers read and ignored) or the end of the
 * connection. The public fields are results; the rest is private to httpc.c.
 */
typedef struct {
    /* Results, valid once httpc_parser_feed() or httpc_parser_eof() returned 1. */
    int status;        /* 100-599 */
    int minor;         /* HTTP/1.<minor> */
    bool keep_alive;   /* the connection may carry the next request */
    cbuf body;         /* the body (secret: cleansed), NUL-terminated */
    char **set_cookie; /* the Set-Cookie values of the final response, in order */
    size_t set_cookie_count;
    uint64_t received; /* bytes fed so far, all responses included */
    /* Private. */
    int state;
    bool no_body;
    bool conn_close, conn_keep_alive;
    cbuf head;
    size_t line_size; /* bytes of the current head line seen so far */
    cbuf line;        /* the current chunk-size or trailer line */
    uint64_t remaining;
    size_t trailer_size, trailer_count;
    unsigned interim;
} httpc_parser;

/*
 * Start reading a response. @no_body: the request was HEAD or CONNECT (a final response has no
 * body then). @body_max: the body limit (0: 4 MiB). httpc_parser_clear() frees what it holds.
 */
void httpc_parser_init(httpc_parser *p, bool no_body, size_t body_max);
void httpc_parser_clear(httpc_parser *p);
/*
 * Feed @size bytes (borrowed). 1: the response is complete, and *out_used says how many bytes
 * it took (the rest belongs to whatever follows); 0: all taken, more needed; -EPROTO for a
 * malformed response, -EMSGSIZE for a head or body over its limit. After 1, later calls take
 * nothing and return 1.
 */
int httpc_parser_feed(httpc_parser *p, size_t *out_used, const uint8_t *data, size_t size,
                      cista_error **err) __attribute__((warn_unused_result));
/*
 * The connection ended. 1 when that completes the response (a body delimited by the close, or
 * an already complete response); -EPROTO (truncated, or no response at all) otherwise.
 */
int httpc_parser_eof(httpc_parser *p, cista_error **err) __attribute__((warn_unused_result));
/* Whether the body being read ends with the connection (TLS must then end with close_notify). */
bool httpc_parser_close_delimited(const httpc_parser *p);

#endif
