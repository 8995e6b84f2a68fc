/*
 * test_httpc.c - util/httpc.h: the response parser (Content-Length, chunked with extensions and
 * trailers, interim responses, close-delimited bodies, HTTP/1.0, limits and malformed input,
 * byte-by-byte feeding), the cookie jar, URL and no_proxy parsing; then the client against a
 * server thread on 127.0.0.1: keep-alive, cookies and headers sent, the retry after the server
 * closed an idle connection (and none on a fresh one), Connection: close, HTTP/1.0 and
 * close-delimited bodies, a timeout, a refused connect, an http proxy and a CONNECT tunnel, and
 * TLS with certificates made here (the right CA, another CA, a name mismatch, resumption and
 * its end after httpc_disconnect(c, true)).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/httpc.h"
#include "util/util.h"

/* ---- the parser ---- */

/* Feed @s in pieces of @step bytes (0: whole), then the end of the connection when @eof. */
static int parse(httpc_parser *p, const char *s, size_t n, size_t step, bool no_body, size_t max,
                 bool eof, size_t *out_used, cista_error **err)
{
    httpc_parser_init(p, no_body, max);
    size_t off = 0;
    int r = 0;
    while (off < n) {
        size_t k = step && n - off > step ? step : n - off, used = 0;
        r = httpc_parser_feed(p, &used, (const uint8_t *)s + off, k, err);
        if (r < 0)
            return r;
        if (r == 1) {
            off += used;
            break;
        }
        off += k;
    }
    if (out_used)
        *out_used = off;
    if (r == 0 && eof)
        r = httpc_parser_eof(p, err);
    return r;
}

/* Parse @s whole and byte by byte: both must give @want and, on success, @status and @body. */
static void expect(const char *s, int want, int status, const char *body, bool keep_alive)
{
    for (size_t step = 0; step < 2; step++) {
        httpc_parser p;
        _cleanup_err_ cista_error *e = NULL;
        int r = parse(&p, s, strlen(s), step, false, 0, true, NULL, &e);
        if (r != want)
            fprintf(stderr, "response %.60s: got %d (%s), want %d\n", s, r, e ? e->msg : "-", want);
        assert_int_equal(r, want);
        if (want == 1) {
            assert_int_equal(p.status, status);
            assert_int_equal(p.body.size, strlen(body));
            assert_memory_equal(p.body.data ? (char *)p.body.data : "", body, strlen(body));
            assert_int_equal(p.keep_alive, keep_alive);
        } else {
            assert_non_null(e);
        }
        httpc_parser_clear(&p);
    }
}

static void test_parse_content_length(void **state)
{
    (void)state;
    expect("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 1, 200, "hello", true);
    expect("HTTP/1.1 404 Not Found\r\ncontent-length:  2 \r\n\r\nno", 1, 404, "no", true);
    expect("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 1, 200, "", true);
    expect("HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 1, 200, "ok", true); /* bare LFs */
    /* Equal duplicates are one length; different ones, signs, junk and overflow are not. */
    expect("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 1, 200, "ok",
           true);
    expect("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", 1, 200, "ok", true);
    expect("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!", -EPROTO, 0, "",
           false);
    expect("HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok!", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nContent-Length: 2a\r\n\r\nok", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", -EPROTO, 0, "",
           false);
    /* Truncated: the connection ends before the length. */
    expect("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", -EPROTO, 0, "", false);
    /* What follows the body is not taken. */
    httpc_parser p;
    size_t used = 0;
    const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\n";
    assert_int_equal(parse(&p, two, strlen(two), 0, false, 0, false, &used, NULL), 1);
    assert_int_equal(used, strlen("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"));
    assert_int_equal(p.received, used);
    size_t again = 9;
    assert_int_equal(httpc_parser_feed(&p, &again, (const uint8_t *)"x", 1, NULL), 1);
    assert_int_equal(again, 0);
    httpc_parser_clear(&p);
}

static void test_parse_chunked(void **state)
{
    (void)state;
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           "5;name=value\r\nhello\r\n6 ; x=\"y\"\r\n world\r\nA\r\n0123456789\r\n0\r\n"
           "Trailer-One: 1\r\nTrailer-Two: 2\r\n\r\n",
           1, 200, "hello world0123456789", true);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", 1, 200, "", true);
    expect("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n", 1, 200, "ok", true);
    /* Chunked wins over Content-Length, and the connection is not reused after that. */
    expect("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
           "2\r\nok\r\n0\r\n\r\n",
           1, 200, "ok", false);
    /* Bad chunk sizes, data longer than its size, bad trailers, truncation. */
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", -EPROTO, 0,
           "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n", -EMSGSIZE,
           0, "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n", -EPROTO, 0,
           "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n", -EPROTO, 0,
           "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", -EPROTO, 0, "",
           false);
    /* Other codings are not supported; nor is Transfer-Encoding in HTTP/1.0. */
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", -EPROTO, 0, "",
           false);
    expect("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", -EPROTO, 0,
           "", false);
    expect("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", -EPROTO, 0, "", false);
    /* A chunk-size line without end, and trailers without end, are bounded. */
    _cleanup_free_ char *big = xmalloc(80000);
    int n = sprintf(big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
    memset(big + n, 'x', 6000);
    big[n + 6000] = 0;
    expect(big, -EPROTO, 0, "", false);
    n = sprintf(big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (int i = 0; i < 150; i++)
        n += sprintf(big + n, "T%d: %s\r\n", i, "xxxxxxxxxxxxxxxxxxxx");
    expect(big, -EPROTO, 0, "", false); /* more than 100 trailer lines */
    n = sprintf(big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: ");
    memset(big + n, 'x', 70000);
    big[n + 70000] = 0;
    expect(big, -EMSGSIZE, 0, "", false);
}

static void test_parse_interim_and_framing(void **state)
{
    (void)state;
    expect("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n"
           "Set-Cookie: early=1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
           1, 200, "ok", true);
    expect("HTTP/1.1 101 Switching Protocols\r\n\r\n", -EPROTO, 0, "", false);
    char many[2048] = "";
    for (int i = 0; i < 17; i++)
        strcat(many, "HTTP/1.1 100 Continue\r\n\r\n");
    strcat(many, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    expect(many, -EPROTO, 0, "", false);
    /* The interim response's cookies are not the final one's. */
    httpc_parser p;
    const char *s = "HTTP/1.1 100 Continue\r\nSet-Cookie: a=1\r\n\r\n"
                    "HTTP/1.1 200 OK\r\nSet-Cookie: b=2; Path=/\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(parse(&p, s, strlen(s), 0, false, 0, false, NULL, NULL), 1);
    assert_int_equal(p.set_cookie_count, 1);
    assert_string_equal(p.set_cookie[0], "b=2; Path=/");
    httpc_parser_clear(&p);
    /* Close-delimited: complete only at the end of the connection; never kept alive. */
    s = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\nabc";
    assert_int_equal(parse(&p, s, strlen(s), 0, false, 0, false, NULL, NULL), 0);
    assert_true(httpc_parser_close_delimited(&p));
    assert_int_equal(httpc_parser_eof(&p, NULL), 1);
    assert_string_equal((char *)p.body.data, "abc");
    assert_false(p.keep_alive);
    httpc_parser_clear(&p);
    expect("HTTP/1.1 200 OK\r\n\r\nabc", 1, 200, "abc", false);
    /* HEAD (and CONNECT), 204 and 304 have no body whatever the headers say. */
    s = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    assert_int_equal(parse(&p, s, strlen(s), 0, true, 0, false, NULL, NULL), 1);
    assert_int_equal(p.body.size, 0);
    assert_true(p.keep_alive);
    httpc_parser_clear(&p);
    expect("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", 1, 204, "", true);
    expect("HTTP/1.1 304 Not Modified\r\n\r\n", 1, 304, "", true);
    /* HTTP/1.0: closed unless the server says keep-alive; HTTP/1.1: kept unless it says close. */
    expect("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 1, 200, "ok", false);
    expect("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", 1, 200, "ok",
           true);
    expect("HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nContent-Length: 2\r\n\r\nok", 1, 200,
           "ok", false);
    /* The end of the connection without a response, or within the head. */
    httpc_parser_init(&p, false, 0);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(httpc_parser_eof(&p, &e), -EPROTO);
    assert_non_null(strstr(e->msg, "without a response"));
    httpc_parser_clear(&p);
    expect("HTTP/1.1 200 OK\r\nContent-Le", -EPROTO, 0, "", false);
}

static void test_parse_malformed_and_limits(void **state)
{
    (void)state;
    expect("HTTP/2 200 OK\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 2000 OK\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 099 Low\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 600 High\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 20x OK\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200OK\r\n\r\n", -EPROTO, 0, "", false);
    expect("http/1.1 200 OK\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", -EPROTO, 0, "",
           false);
    expect("HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nBad name: 1\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n", -EPROTO, 0, "", false);
    expect("HTTP/1.1 200 O\x01K\r\n\r\n", -EPROTO, 0, "", false);
    /* A NUL in the head */
    httpc_parser p;
    const char nul[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(parse(&p, nul, sizeof(nul) - 1, 0, false, 0, false, NULL, NULL), -EPROTO);
    httpc_parser_clear(&p);
    /* More than 100 header lines; a head over 64 KiB. */
    _cleanup_free_ char *big = xmalloc(80000);
    int n = sprintf(big, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 101; i++)
        n += sprintf(big + n, "X-%d: y\r\n", i);
    strcpy(big + n, "Content-Length: 0\r\n\r\n");
    expect(big, -EPROTO, 0, "", false);
    n = sprintf(big, "HTTP/1.1 200 OK\r\nX: ");
    memset(big + n, 'a', 70000);
    strcpy(big + n + 70000, "\r\n\r\n");
    expect(big, -EMSGSIZE, 0, "", false);
    /* Body limits: by Content-Length before reading, chunked, close-delimited. */
    _cleanup_err_ cista_error *e = NULL;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 5242880\r\n\r\n";
    assert_int_equal(parse(&p, s, strlen(s), 0, false, 0, false, NULL, &e), -EMSGSIZE);
    assert_string_equal(e->msg, "response larger than 4 MiB");
    httpc_parser_clear(&p);
    s = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_int_equal(parse(&p, s, strlen(s), 0, false, 4, false, NULL, NULL), -EMSGSIZE);
    httpc_parser_clear(&p);
    assert_int_equal(parse(&p, s, strlen(s), 0, false, 5, false, NULL, NULL), 1);
    httpc_parser_clear(&p);
    s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    assert_int_equal(parse(&p, s, strlen(s), 0, false, 5, false, NULL, NULL), -EMSGSIZE);
    httpc_parser_clear(&p);
    assert_int_equal(parse(&p, s, strlen(s), 1, false, 6, false, NULL, NULL), 1);
    httpc_parser_clear(&p);
    s = "HTTP/1.1 200 OK\r\n\r\nabcdef";
    assert_int_equal(parse(&p, s, strlen(s), 0, false, 5, true, NULL, NULL), -EMSGSIZE);
    httpc_parser_clear(&p);
}

/* ---- cookies ---- */

static void test_cookie_jar(void **state)
{
    (void)state;
    httpc_jar j = {0};
    time_t now = 1700000000;
    assert_null(httpc_jar_header(&j, now));
    assert_int_equal(httpc_jar_set(&j, "kbs-session-id=abc; Path=/; HttpOnly", now, NULL), 0);
    assert_int_equal(httpc_jar_set(&j, " other = \"q v\" ;Secure", now, NULL), 0);
    _cleanup_free_ char *h = httpc_jar_header(&j, now);
    assert_string_equal(h, "kbs-session-id=abc; other=\"q v\"");
    /* Same name replaces; Max-Age=0, negative, or an Expires in the past removes. */
    assert_int_equal(httpc_jar_set(&j, "kbs-session-id=def", now, NULL), 0);
    assert_int_equal(j.count, 2);
    assert_string_equal(j.items[0].value, "def");
    assert_int_equal(httpc_jar_set(&j, "other=; Max-Age=0", now, NULL), 0);
    assert_int_equal(j.count, 1);
    assert_int_equal(httpc_jar_set(&j, "a=1", now, NULL), 0);
    assert_int_equal(httpc_jar_set(&j, "a=1; max-age=-5", now, NULL), 0);
    assert_int_equal(j.count, 1);
    assert_int_equal(httpc_jar_set(&j, "b=1", now, NULL), 0);
    assert_int_equal(httpc_jar_set(&j, "b=2; Expires=Thu, 01 Jan 1970 00:00:00 GMT", now, NULL), 0);
    assert_int_equal(j.count, 1);
    /* a date before 1970 is a date (in the past): it deletes, not a session cookie */
    assert_int_equal(httpc_jar_set(&j, "b=1", now, NULL), 0);
    assert_int_equal(httpc_jar_set(&j, "b=; Expires=Fri, 01 Jan 1960 00:00:00 GMT", now, NULL), 0);
    assert_int_equal(j.count, 1);
    /* Max-Age wins over an Expires in the past; Expires in the future keeps it until then. */
    assert_int_equal(
        httpc_jar_set(&j, "c=1; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Max-Age=60", now, NULL), 0);
    assert_int_equal(httpc_jar_set(&j, "d=1; expires=Wed, 09-Jun-2100 10:18:14 GMT", now, NULL), 0);
    assert_int_equal(httpc_jar_set(&j, "e=1; Max-Age=junk; Expires=not a date", now, NULL), 0);
    assert_int_equal(j.count, 4);
    _cleanup_free_ char *h2 = httpc_jar_header(&j, now);
    assert_string_equal(h2, "kbs-session-id=def; c=1; d=1; e=1");
    _cleanup_free_ char *h3 = httpc_jar_header(&j, now + 61);
    assert_string_equal(h3, "kbs-session-id=def; d=1; e=1");
    /* Malformed: no '=', empty or bad name, control characters; too big; too many. */
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(httpc_jar_set(&j, "novalue", now, &e), -EINVAL);
    err_clear(&e);
    assert_int_equal(httpc_jar_set(&j, "=v", now, NULL), -EINVAL);
    assert_int_equal(httpc_jar_set(&j, "a b=v", now, NULL), -EINVAL);
    assert_int_equal(httpc_jar_set(&j, "a=v\x01", now, NULL), -EINVAL);
    _cleanup_free_ char *big = xmalloc(HTTPC_COOKIE_SIZE_MAX + 8);
    memset(big, 'v', HTTPC_COOKIE_SIZE_MAX + 8);
    memcpy(big, "big=", 4);
    big[4 + HTTPC_COOKIE_SIZE_MAX - 2] = 0; /* name and value: one byte over the limit */
    assert_int_equal(httpc_jar_set(&j, big, now, NULL), -EMSGSIZE);
    big[4 + HTTPC_COOKIE_SIZE_MAX - 3] = 0; /* exactly the limit */
    assert_int_equal(httpc_jar_set(&j, big, now, NULL), 0);
    httpc_jar_clear(&j);
    assert_int_equal(j.count, 0);
    for (int i = 0; i < HTTPC_COOKIES_MAX; i++) {
        char c[32];
        snprintf(c, sizeof(c), "c%d=%d", i, i);
        assert_int_equal(httpc_jar_set(&j, c, now, NULL), 0);
    }
    assert_int_equal(httpc_jar_set(&j, "one=more", now, NULL), -ENOSPC);
    assert_int_equal(httpc_jar_set(&j, "c5=replaced", now, NULL), 0); /* replacing still works */
    assert_int_equal(j.count, HTTPC_COOKIES_MAX);
    /* a full jar whose cookies expired makes room instead of refusing the session cookie */
    httpc_jar_clear(&j);
    for (int i = 0; i < HTTPC_COOKIES_MAX; i++) {
        char c[48];
        snprintf(c, sizeof(c), "t%d=%d; Max-Age=10", i, i);
        assert_int_equal(httpc_jar_set(&j, c, now, NULL), 0);
    }
    assert_int_equal(httpc_jar_set(&j, "kbs-session-id=x", now + 5, NULL), -ENOSPC);
    assert_int_equal(httpc_jar_set(&j, "kbs-session-id=x", now + 11, NULL), 0);
    httpc_jar_clear(&j);
}

/* ---- URLs and no_proxy ---- */

static void url_ok(const char *url, bool https, const char *host, unsigned port,
                   const char *host_hdr, const char *base)
{
    httpc_url u;
    _cleanup_err_ cista_error *e = NULL;
    int r = httpc_url_parse(&u, url, &e);
    if (r < 0)
        fprintf(stderr, "%s: %s\n", url, e->msg);
    assert_int_equal(r, 0);
    assert_int_equal(u.https, https);
    assert_string_equal(u.host, host);
    assert_int_equal(u.port, port);
    assert_string_equal(u.host_hdr, host_hdr);
    assert_string_equal(u.base, base);
    httpc_url_clear(&u);
}

static void url_bad(const char *url, const char *words)
{
    httpc_url u;
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(httpc_url_parse(&u, url, &e), -EINVAL);
    if (!strstr(e->msg, words))
        fprintf(stderr, "%s: \"%s\" lacks \"%s\"\n", url, e->msg, words);
    assert_non_null(strstr(e->msg, words));
}

static void test_url(void **state)
{
    (void)state;
    url_ok("http://kbs.example", false, "kbs.example", 80, "kbs.example", "");
    url_ok("HTTPS://kbs.example:443/", true, "kbs.example", 443, "kbs.example", "");
    url_ok("https://kbs.example.:8443/base/path//", true, "kbs.example", 8443, "kbs.example:8443",
           "/base/path");
    url_ok("http://10.0.0.1:8080", false, "10.0.0.1", 8080, "10.0.0.1:8080", "");
    url_ok("https://[::1]:8443/x", true, "::1", 8443, "[::1]:8443", "/x");
    url_ok("https://[2001:db8::1]", true, "2001:db8::1", 443, "[2001:db8::1]", "");
    url_ok("http://my_host-1", false, "my_host-1", 80, "my_host-1", "");
    httpc_url u;
    assert_int_equal(httpc_url_parse(&u, "https://[::1]", NULL), 0);
    assert_true(u.host_is_ip);
    assert_string_equal(u.authority, "[::1]:443");
    httpc_url_clear(&u);
    assert_int_equal(httpc_url_parse(&u, "https://kbs", NULL), 0);
    assert_false(u.host_is_ip);
    httpc_url_clear(&u);
    url_bad("ftp://kbs", "scheme");
    url_bad("kbs.example", "scheme");
    url_bad("https://user:pw@kbs", "credentials");
    url_bad("https://kbs/#frag", "fragment");
    url_bad("https://kbs/?q=1", "query");
    url_bad("https://kbs:0", "port");
    url_bad("https://kbs:65536", "port");
    url_bad("https://kbs:http", "port");
    url_bad("https://kbs:", "port");
    url_bad("https://kbs:123456", "port");
    url_bad("https://[::1", "unterminated");
    url_bad("https://[fe80::1%25eth0]", "zone");
    url_bad("https://[1.2.3.4]", "IPv6");
    url_bad("https://[::1]x", "after");
    url_bad("https://1.2.3", "IPv4");
    url_bad("https://999.1.1.1", "IPv4");
    url_bad("https://", "no host");
    url_bad("https://:8443", "no host");
    url_bad("https://a..b", "host name");
    url_bad("https://a b", "spaces");
    url_bad("https://k\xc3\xa9", "non-ASCII");
    /* Proxies: scheme optional, http:// only, no credentials (never echoed), no path. */
    assert_int_equal(httpc_proxy_url_parse(&u, "proxy.example:3128", NULL), 0);
    assert_string_equal(u.authority, "proxy.example:3128");
    httpc_url_clear(&u);
    assert_int_equal(httpc_proxy_url_parse(&u, "http://proxy/", NULL), 0);
    assert_int_equal(u.port, 1080);
    httpc_url_clear(&u);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(httpc_proxy_url_parse(&u, "https://proxy", &e), -EINVAL);
    err_clear(&e);
    assert_int_equal(httpc_proxy_url_parse(&u, "socks5://proxy:1080", &e), -EINVAL);
    err_clear(&e);
    assert_int_equal(httpc_proxy_url_parse(&u, "http://proxy/path", &e), -EINVAL);
    err_clear(&e);
    assert_int_equal(httpc_proxy_url_parse(&u, "http://me:s3cret@proxy", &e), -EINVAL);
    assert_non_null(strstr(e->msg, "credentials"));
    assert_null(strstr(e->msg, "s3cret"));
}

static void test_no_proxy(void **state)
{
    (void)state;
    assert_true(httpc_no_proxy_match("*", "anything.example"));
    assert_true(httpc_no_proxy_match("localhost, *", "kbs"));
    assert_true(httpc_no_proxy_match("example.com", "example.com"));
    assert_true(httpc_no_proxy_match("example.com", "kbs.Example.COM"));
    assert_true(httpc_no_proxy_match(".example.com", "kbs.example.com"));
    assert_true(httpc_no_proxy_match(".example.com", "example.com"));
    assert_true(httpc_no_proxy_match("a.test, example.com ", "x.example.com"));
    assert_true(httpc_no_proxy_match("example.com", "example.com."));
    assert_false(httpc_no_proxy_match("example.com", "badexample.com"));
    assert_false(httpc_no_proxy_match("kbs.example.com", "example.com"));
    assert_false(httpc_no_proxy_match("", "example.com"));
    assert_false(httpc_no_proxy_match(",,", "example.com"));
    assert_false(httpc_no_proxy_match("*.example.com", "kbs.example.com"));
    /* IP addresses match exactly (IPv6 in any spelling, with or without brackets). */
    assert_true(httpc_no_proxy_match("localhost,127.0.0.1", "127.0.0.1"));
    assert_false(httpc_no_proxy_match("127.0.0.1", "127.0.0.10"));
    assert_false(httpc_no_proxy_match("0.0.1", "127.0.0.1"));
    /* CIDR ranges (curl >= 7.86), IP literals only */
    assert_true(httpc_no_proxy_match("10.0.0.0/8", "10.1.2.3"));
    assert_true(httpc_no_proxy_match("x.test, 192.168.4.0/22", "192.168.7.255"));
    assert_false(httpc_no_proxy_match("192.168.4.0/22", "192.168.8.1"));
    assert_true(httpc_no_proxy_match("0.0.0.0/0", "8.8.8.8"));
    assert_true(httpc_no_proxy_match("fd00::/8", "[fd12::1]"));
    assert_false(httpc_no_proxy_match("fd00::/8", "fe80::1"));
    assert_false(httpc_no_proxy_match("10.0.0.0/33", "10.1.2.3"));
    assert_false(httpc_no_proxy_match("10.0.0.0/8", "ten.example"));
    assert_false(httpc_no_proxy_match("10.0.0.0/8", "::1"));
    assert_true(httpc_no_proxy_match("::1", "::1"));
    assert_true(httpc_no_proxy_match("[::1]", "::1"));
    assert_true(httpc_no_proxy_match("2001:DB8:0::1", "[2001:db8::1]"));
    assert_false(httpc_no_proxy_match("::1", "::2"));
    assert_false(httpc_no_proxy_match("example.com", "127.0.0.1"));
}

/* ---- a server thread on 127.0.0.1 ---- */

enum { KEEP, CLOSE, HOLD };
#define MAXR 8

typedef struct {
    /* The script: response i (NULL: none; wait for the client to leave), then what to do. */
    const char *resp[MAXR];
    int action[MAXR];
    int nresp;
    bool proxy_connect; /* each connection starts with CONNECT, answered 200 */
    SSL_CTX *tls;
    /* Filled by the thread; read after srv_stop(). */
    int lfd;
    unsigned port;
    int accepts, resumed, handshake_failures;
    char *req[MAXR];
    char *connect_head;
    int held[MAXR];
    int nheld;
    atomic_bool stop;
    pthread_t th;
} srv;

static ssize_t srv_io(int fd, SSL *ssl, void *buf, size_t n, bool wr)
{
    if (ssl) {
        size_t done = 0;
        int ok = wr ? SSL_write_ex(ssl, buf, n, &done) : SSL_read_ex(ssl, buf, n, &done);
        return ok ? (ssize_t)done : -1;
    }
    return wr ? send(fd, buf, n, MSG_NOSIGNAL) : recv(fd, buf, n, 0);
}

/* One request (head and Content-Length body), or NULL when the client closed. */
static char *srv_read_request(int fd, SSL *ssl)
{
    size_t cap = 1 << 16, size = 0;
    char *b = xmalloc(cap + 1);
    for (;;) {
        b[size] = 0;
        char *end = strstr(b, "\r\n\r\n");
        if (end) {
            size_t need = (size_t)(end + 4 - b);
            char *cl = strcasestr(b, "\r\nContent-Length:");
            if (cl && cl < end)
                need += strtoul(cl + 17, NULL, 10);
            if (size >= need)
                return b;
        }
        if (size == cap)
            break;
        ssize_t n = srv_io(fd, ssl, b + size, cap - size, false);
        if (n <= 0)
            break;
        size += (size_t)n;
    }
    free(b);
    return NULL;
}

static void *srv_main(void *arg)
{
    srv *s = arg;
    int i = 0;
    while (i < s->nresp && !atomic_load(&s->stop)) {
        struct pollfd pfd = {.fd = s->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            break;
        s->accepts++;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (s->proxy_connect) {
            free(s->connect_head);
            s->connect_head = srv_read_request(fd, NULL);
            const char *ok = "HTTP/1.1 200 Connection established\r\n\r\n";
            if (!s->connect_head || send(fd, ok, strlen(ok), MSG_NOSIGNAL) < 0) {
                close(fd);
                continue;
            }
        }
        SSL *ssl = NULL;
        if (s->tls) {
            ssl = SSL_new(s->tls);
            SSL_set_fd(ssl, fd);
            if (SSL_accept(ssl) != 1) {
                s->handshake_failures++;
                ERR_clear_error();
                SSL_free(ssl);
                close(fd);
                continue;
            }
            if (SSL_session_reused(ssl))
                s->resumed++;
        }
        bool open = true;
        while (open && i < s->nresp) {
            char *req = srv_read_request(fd, ssl);
            if (!req)
                break;
            s->req[i] = req;
            const char *resp = s->resp[i];
            int action = s->action[i++];
            if (!resp) {
                char c;
                while (srv_io(fd, ssl, &c, 1, false) > 0)
                    ;
                break;
            }
            if (*resp && srv_io(fd, ssl, (void *)resp, strlen(resp), true) < 0)
                break;
            if (action == CLOSE)
                open = false;
            if (action == HOLD) {
                s->held[s->nheld++] = fd;
                fd = -1;
                open = false;
            }
        }
        if (ssl) {
            if (fd >= 0)
                SSL_shutdown(ssl);
            SSL_free(ssl);
        }
        if (fd >= 0)
            close(fd);
    }
    return NULL;
}

static void srv_start(srv *s)
{
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 8), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    atomic_store(&s->stop, false);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(srv *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    close(s->lfd);
    for (int i = 0; i < s->nheld; i++)
        close(s->held[i]);
}

static void srv_free(srv *s)
{
    for (int i = 0; i < MAXR; i++)
        free(s->req[i]);
    free(s->connect_head);
}

static httpc *client(const char *scheme, const char *host, unsigned port, const char *ca,
                     long timeout)
{
    _cleanup_free_ char *url = xasprintf("%s://%s:%u", scheme, host, port);
    httpc_opts o = {.url = url, .ca_file = ca, .timeout = timeout};
    httpc *c = NULL;
    _cleanup_err_ cista_error *e = NULL;
    int r = httpc_new(&c, &o, &e);
    if (r < 0)
        fprintf(stderr, "httpc_new %s: %s\n", url, e->msg);
    assert_int_equal(r, 0);
    return c;
}

/* GET @path: the status, or the error code; the body must be @body when given. */
static int get(httpc *c, const char *path, const char *body, cista_error **err)
{
    httpc_req q = {.method = "GET", .path = path};
    httpc_resp resp;
    int r = httpc_request(c, &resp, &q, err);
    if (r < 0)
        return r;
    if (body)
        assert_string_equal((char *)resp.body, body);
    free(resp.body);
    return resp.status;
}

#define OK2 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

static void test_keepalive_cookies_headers(void **state)
{
    (void)state;
    srv s = {.nresp = 3,
             .resp = {"HTTP/1.1 200 OK\r\nSet-Cookie: kbs-session-id=abc; Path=/; HttpOnly\r\n"
                      "Content-Length: 5\r\n\r\nfirst",
                      "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3;x=y\r\nsec\r\n3\r\nond\r\n0\r\nT: 1\r\n\r\n",
                      OK2}};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("http", "127.0.0.1", s.port, NULL, 5);
    assert_int_equal(get(c, "/kbs/v0/auth", "first", NULL), 200);
    httpc_req q = {.method = "POST",
                   .path = "/kbs/v0/attest?x=1",
                   .bearer = "tok.en",
                   .body = "{\"a\":1}",
                   .body_size = 7};
    httpc_resp resp;
    assert_int_equal(httpc_request(c, &resp, &q, NULL), 0);
    assert_int_equal(resp.status, 201);
    assert_string_equal((char *)resp.body, "second");
    assert_int_equal(resp.body_size, 6);
    free(resp.body);
    httpc_cookies_clear(c);
    assert_int_equal(get(c, "", "ok", NULL), 200);
    srv_stop(&s);
    assert_int_equal(s.accepts, 1); /* all three on one connection */
    _cleanup_free_ char *host = xasprintf("\r\nHost: 127.0.0.1:%u\r\n", s.port);
    assert_non_null(strstr(s.req[0], "GET /kbs/v0/auth HTTP/1.1\r\n"));
    assert_non_null(strstr(s.req[0], host));
    assert_non_null(strstr(s.req[0], "\r\nUser-Agent: cista/"));
    assert_non_null(strstr(s.req[0], "\r\nAccept: */*\r\n"));
    assert_null(strstr(s.req[0], "Cookie"));
    assert_null(strstr(s.req[0], "Authorization"));
    assert_null(strstr(s.req[0], "Content-Length"));
    assert_non_null(strstr(s.req[1], "POST /kbs/v0/attest?x=1 HTTP/1.1\r\n"));
    assert_non_null(strstr(s.req[1], "\r\nCookie: kbs-session-id=abc\r\n"));
    assert_non_null(strstr(s.req[1], "\r\nAuthorization: Bearer tok.en\r\n"));
    assert_non_null(strstr(s.req[1], "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(s.req[1], "\r\nContent-Length: 7\r\n\r\n{\"a\":1}"));
    assert_non_null(strstr(s.req[2], "GET / HTTP/1.1\r\n"));
    assert_null(strstr(s.req[2], "Cookie"));
    srv_free(&s);
    /* Requests we would not send. */
    _cleanup_err_ cista_error *e = NULL;
    httpc_req bad = {.method = "GET", .path = "no-slash"};
    assert_int_equal(httpc_request(c, &resp, &bad, &e), -EINVAL);
    err_clear(&e);
    bad = (httpc_req){.method = "G T", .path = "/"};
    assert_int_equal(httpc_request(c, &resp, &bad, &e), -EINVAL);
    err_clear(&e);
    bad = (httpc_req){.method = "GET", .path = "/a b"};
    assert_int_equal(httpc_request(c, &resp, &bad, &e), -EINVAL);
    err_clear(&e);
    bad = (httpc_req){.method = "GET", .path = "/", .bearer = "x\r\nEvil: 1"};
    assert_int_equal(httpc_request(c, &resp, &bad, &e), -EINVAL);
}

static void test_retry_after_idle_close(void **state)
{
    (void)state;
    /* The server closes the kept-alive connection after the first response (as an idle timeout
     * would): the second request goes again on a new connection. */
    srv s = {.nresp = 2, .resp = {OK2, OK2}, .action = {CLOSE, KEEP}};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("http", "127.0.0.1", s.port, NULL, 5);
    assert_int_equal(get(c, "/1", "ok", NULL), 200);
    usleep(50 * 1000); /* let the close arrive */
    assert_int_equal(get(c, "/2", "ok", NULL), 200);
    srv_stop(&s);
    assert_int_equal(s.accepts, 2);
    assert_non_null(strstr(s.req[1], "GET /2 "));
    srv_free(&s);
    /* The same when the server reads the request and closes without a byte of response. */
    srv s2 = {.nresp = 3, .resp = {OK2, "", OK2}, .action = {KEEP, CLOSE, KEEP}};
    srv_start(&s2);
    httpc_free(c);
    c = client("http", "127.0.0.1", s2.port, NULL, 5);
    assert_int_equal(get(c, "/1", "ok", NULL), 200);
    assert_int_equal(get(c, "/2", "ok", NULL), 200);
    srv_stop(&s2);
    assert_int_equal(s2.accepts, 2);
    assert_non_null(strstr(s2.req[2], "GET /2 "));
    srv_free(&s2);
}

static void test_no_post_resent(void **state)
{
    (void)state;
    /* The server reads a POST on the reused connection and closes without a response: it may
     * have applied it, so the client reports the failure instead of sending it again. */
    srv s = {.nresp = 3, .resp = {OK2, "", OK2}, .action = {KEEP, CLOSE, KEEP}};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("http", "127.0.0.1", s.port, NULL, 5);
    assert_int_equal(get(c, "/1", "ok", NULL), 200);
    httpc_req q = {.method = "POST", .path = "/counter", .body = "{}", .body_size = 2};
    httpc_resp resp;
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(httpc_request(c, &resp, &q, &e), -EPROTO);
    assert_int_equal(get(c, "/3", "ok", NULL), 200); /* the next request: a new connection */
    srv_stop(&s);
    assert_int_equal(s.accepts, 2);
    int posts = 0;
    for (int i = 0; i < MAXR; i++)
        posts += s.req[i] && strstr(s.req[i], "POST /counter ") != NULL;
    assert_int_equal(posts, 1);
    srv_free(&s);
}

static void test_no_retry_on_fresh_connection(void **state)
{
    (void)state;
    srv s = {.nresp = 2, .resp = {"", OK2}, .action = {CLOSE, KEEP}};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("http", "127.0.0.1", s.port, NULL, 5);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(get(c, "/1", NULL, &e), -EPROTO);
    _cleanup_free_ char *m = err_str(e);
    assert_non_null(strstr(m, "GET http://127.0.0.1:"));
    assert_non_null(strstr(m, "/1: the server closed the connection without a response"));
    usleep(100 * 1000);
    srv_stop(&s);
    assert_int_equal(s.accepts, 1);
    srv_free(&s);
}

static void test_connection_close(void **state)
{
    (void)state;
    /* After "Connection: close", HTTP/1.0 without keep-alive, or a close-delimited body, the
     * client must not reuse the connection: HOLD keeps it open but unanswered, so reusing it
     * would time out. */
    const char *first[] = {
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    };
    for (size_t k = 0; k < ARRAY_LEN(first); k++) {
        srv s = {.nresp = 2, .resp = {first[k], OK2}, .action = {HOLD, KEEP}};
        srv_start(&s);
        _cleanup_httpc_ httpc *c = client("http", "127.0.0.1", s.port, NULL, 2);
        assert_int_equal(get(c, "/1", "ok", NULL), 200);
        assert_int_equal(get(c, "/2", "ok", NULL), 200);
        srv_stop(&s);
        assert_int_equal(s.accepts, 2);
        srv_free(&s);
    }
    srv s = {
        .nresp = 2, .resp = {"HTTP/1.1 200 OK\r\n\r\nuntil the end", OK2}, .action = {CLOSE, KEEP}};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("http", "127.0.0.1", s.port, NULL, 2);
    assert_int_equal(get(c, "/1", "until the end", NULL), 200);
    assert_int_equal(get(c, "/2", "ok", NULL), 200);
    srv_stop(&s);
    assert_int_equal(s.accepts, 2);
    srv_free(&s);
}

static void test_timeout_and_refused(void **state)
{
    (void)state;
    srv s = {.nresp = 1, .resp = {NULL}};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("http", "127.0.0.1", s.port, NULL, 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(get(c, "/slow", NULL, &e), -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(secs >= 0.9 && secs < 3);
    _cleanup_free_ char *m = err_str(e);
    assert_non_null(strstr(m, "timed out"));
    srv_stop(&s);
    srv_free(&s);
    /* Nothing listens on the port any more. */
    err_clear(&e);
    _cleanup_httpc_ httpc *c2 = client("http", "127.0.0.1", s.port, NULL, 1);
    assert_int_equal(get(c2, "/", NULL, &e), -ECONNREFUSED);
    _cleanup_free_ char *m2 = err_str(e);
    assert_non_null(strstr(m2, "connect to 127.0.0.1 port"));
}

/* A name goes through the bounded (asynchronous) lookup; one that cannot resolve fails within
 * the request's deadline, whatever the resolver configuration's timeouts. */
static void test_name_lookup(void **state)
{
    (void)state;
    srv s = {.nresp = 1, .resp = {OK2}};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("http", "localhost", s.port, NULL, 5);
    _cleanup_err_ cista_error *e = NULL;
    int r = get(c, "/", "ok", &e);
    if (r != 200) /* a machine whose localhost resolves to ::1 only */
        assert_non_null(e);
    srv_stop(&s);
    srv_free(&s);
    err_clear(&e);
    /* RFC 6761: .invalid never resolves. A deadline longer than the resolver's own timeouts:
     * a lookup abandoned at the deadline stays with glibc's thread, which LeakSanitizer would
     * report at exit. */
    _cleanup_httpc_ httpc *c2 = client("http", "cista-test.invalid", 80, NULL, 30);
    r = get(c2, "/", NULL, &e);
    assert_true(r == -ECONNREFUSED || r == -ETIMEDOUT);
    _cleanup_free_ char *m = err_str(e);
    assert_non_null(strstr(m, "resolv"));
}

/* ---- TLS: certificates made here ---- */

static char g_dir[64];
static EVP_PKEY *g_ca_key, *g_other_key, *g_srv_key;
static X509 *g_ca, *g_other, *g_srv;

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
}

static X509 *make_cert(const char *cn, const char *san, EVP_PKEY *key, X509 *issuer,
                       EVP_PKEY *issuer_key)
{
    static long serial = 1;
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), serial++);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(c, n);
    X509_set_issuer_name(c, issuer ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    X509_gmtime_adj(X509_getm_notBefore(c), -3600);
    X509_gmtime_adj(X509_getm_notAfter(c), 86400);
    X509_set_pubkey(c, key);
    add_ext(c, issuer ? issuer : c, NID_basic_constraints,
            issuer ? "CA:FALSE" : "critical,CA:TRUE");
    if (!issuer)
        add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign");
    if (san)
        add_ext(c, issuer, NID_subject_alt_name, san);
    assert_true(X509_sign(c, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return c;
}

static void write_pem(const char *name, X509 *cert)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", g_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, cert), 1);
    fclose(f);
}

static int tls_setup(void **state)
{
    (void)state;
    strcpy(g_dir, "/tmp/test_httpc.XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    g_ca_key = EVP_EC_gen("P-256");
    g_other_key = EVP_EC_gen("P-256");
    g_srv_key = EVP_EC_gen("P-256");
    g_ca = make_cert("test-ca", NULL, g_ca_key, NULL, NULL);
    g_other = make_cert("other-ca", NULL, g_other_key, NULL, NULL);
    g_srv = make_cert("127.0.0.1", "IP:127.0.0.1", g_srv_key, g_ca, g_ca_key);
    write_pem("ca.pem", g_ca);
    write_pem("other.pem", g_other);
    return 0;
}

static int tls_teardown(void **state)
{
    (void)state;
    _cleanup_free_ char *a = xasprintf("%s/ca.pem", g_dir);
    _cleanup_free_ char *b = xasprintf("%s/other.pem", g_dir);
    unlink(a);
    unlink(b);
    rmdir(g_dir);
    X509_free(g_ca);
    X509_free(g_other);
    X509_free(g_srv);
    EVP_PKEY_free(g_ca_key);
    EVP_PKEY_free(g_other_key);
    EVP_PKEY_free(g_srv_key);
    return 0;
}

static SSL_CTX *server_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, g_srv), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, g_srv_key), 1);
    return ctx;
}

static void test_tls_verify_and_resume(void **state)
{
    (void)state;
    _cleanup_free_ char *ca = xasprintf("%s/ca.pem", g_dir);
    /* Each response closes the connection: the second handshake resumes the first's session;
     * after httpc_disconnect(c, true) none does. */
    srv s = {.nresp = 4,
             .resp = {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\none",
                      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo", OK2, OK2},
             .action = {CLOSE, KEEP, KEEP, KEEP},
             .tls = server_ctx()};
    srv_start(&s);
    _cleanup_httpc_ httpc *c = client("https", "127.0.0.1", s.port, ca, 5);
    assert_int_equal(get(c, "/1", "one", NULL), 200);
    assert_int_equal(get(c, "/2", "two", NULL), 200);
    httpc_disconnect(c, true);
    assert_int_equal(get(c, "/3", "ok", NULL), 200);
    httpc_disconnect(c, false);
    assert_int_equal(get(c, "/4", "ok", NULL), 200);
    srv_stop(&s);
    assert_int_equal(s.accepts, 4);
    assert_int_equal(s.resumed, 1);
    srv_free(&s);
    SSL_CTX_free(s.tls);
}

static void test_tls_refusals(void **state)
{
    (void)state;
    _cleanup_free_ char *other = xasprintf("%s/other.pem", g_dir);
    _cleanup_free_ char *ca = xasprintf("%s/ca.pem", g_dir);
    srv s = {.nresp = 1, .resp = {OK2}, .tls = server_ctx()};
    srv_start(&s);
    /* A certificate from another CA. */
    _cleanup_httpc_ httpc *c = client("https", "127.0.0.1", s.port, other, 5);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(get(c, "/", NULL, &e), -EKEYREJECTED);
    _cleanup_free_ char *m = err_str(e);
    assert_non_null(strstr(m, "certificate"));
    assert_non_null(strstr(m, "unable to get local issuer certificate"));
    /* The right CA, the wrong name: the certificate is for 127.0.0.1 only. */
    err_clear(&e);
    _cleanup_httpc_ httpc *c2 = client("https", "localhost", s.port, ca, 5);
    assert_int_equal(get(c2, "/", NULL, &e), -EKEYREJECTED);
    _cleanup_free_ char *m2 = err_str(e);
    assert_non_null(strstr(m2, "hostname mismatch"));
    srv_stop(&s);
    assert_int_equal(s.handshake_failures, 2);
    srv_free(&s);
    SSL_CTX_free(s.tls);
    /* No trust anchors, or a CA file that is not there. */
    httpc *x = NULL;
    err_clear(&e);
    httpc_opts o = {.url = "https://127.0.0.1:1"};
    assert_int_equal(httpc_new(&x, &o, &e), -EINVAL);
    err_clear(&e);
    o.ca_file = "/nonexistent/ca.pem";
    assert_int_equal(httpc_new(&x, &o, &e), -EKEYREJECTED);
    assert_null(x);
}

static void test_proxies(void **state)
{
    (void)state;
    _cleanup_free_ char *ca = xasprintf("%s/ca.pem", g_dir);
    /* https through a CONNECT tunnel: the thread is the proxy and, inside, the origin. */
    srv s = {.nresp = 2, .resp = {OK2, OK2}, .proxy_connect = true, .tls = server_ctx()};
    srv_start(&s);
    _cleanup_free_ char *proxy = xasprintf("http://127.0.0.1:%u", s.port);
    setenv("https_proxy", proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    _cleanup_httpc_ httpc *c = client("https", "127.0.0.1", 9, ca, 5);
    assert_int_equal(get(c, "/a", "ok", NULL), 200);
    assert_int_equal(get(c, "/b", "ok", NULL), 200);
    srv_stop(&s);
    assert_int_equal(s.accepts, 1);
    assert_non_null(s.connect_head);
    assert_non_null(strstr(s.connect_head, "CONNECT 127.0.0.1:9 HTTP/1.1\r\n"));
    assert_non_null(strstr(s.connect_head, "\r\nHost: 127.0.0.1:9\r\n"));
    assert_non_null(strstr(s.req[0], "GET /a HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
    srv_free(&s);
    SSL_CTX_free(s.tls);
    /* no_proxy: straight to 127.0.0.1:9, where nothing listens. */
    setenv("no_proxy", "localhost, 127.0.0.1", 1);
    _cleanup_httpc_ httpc *c2 = client("https", "127.0.0.1", 9, ca, 5);
    _cleanup_err_ cista_error *e = NULL;
    assert_int_equal(get(c2, "/", NULL, &e), -ECONNREFUSED);
    unsetenv("no_proxy");
    /* A proxy we do not support is an error, not a silent direct connection. */
    setenv("https_proxy", "socks5://127.0.0.1:1080", 1);
    httpc *x = NULL;
    err_clear(&e);
    httpc_opts o = {.url = "https://127.0.0.1:9", .ca_file = ca};
    assert_int_equal(httpc_new(&x, &o, &e), -EINVAL);
    _cleanup_free_ char *m = err_str(e);
    assert_non_null(strstr(m, "https_proxy"));
    unsetenv("https_proxy");
    /* http through an http proxy: the absolute form. HTTP_PROXY (upper case) is not read. */
    srv s2 = {.nresp = 1, .resp = {OK2}};
    srv_start(&s2);
    _cleanup_free_ char *proxy2 = xasprintf("127.0.0.1:%u", s2.port);
    setenv("HTTP_PROXY", "http://127.0.0.1:1", 1);
    _cleanup_httpc_ httpc *c3 = client("http", "127.0.0.1", 9, NULL, 5);
    err_clear(&e);
    assert_int_equal(get(c3, "/", NULL, &e), -ECONNREFUSED);
    unsetenv("HTTP_PROXY");
    setenv("http_proxy", proxy2, 1);
    _cleanup_httpc_ httpc *c4 = client("http", "127.0.0.1", 9, NULL, 5);
    unsetenv("http_proxy");
    httpc_req q = {.method = "GET", .path = "/x"};
    httpc_resp resp;
    assert_int_equal(httpc_request(c4, &resp, &q, NULL), 0);
    free(resp.body);
    srv_stop(&s2);
    assert_non_null(
        strstr(s2.req[0], "GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
    srv_free(&s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_content_length),
        cmocka_unit_test(test_parse_chunked),
        cmocka_unit_test(test_parse_interim_and_framing),
        cmocka_unit_test(test_parse_malformed_and_limits),
        cmocka_unit_test(test_cookie_jar),
        cmocka_unit_test(test_url),
        cmocka_unit_test(test_no_proxy),
        cmocka_unit_test(test_keepalive_cookies_headers),
        cmocka_unit_test(test_retry_after_idle_close),
        cmocka_unit_test(test_no_retry_on_fresh_connection),
        cmocka_unit_test(test_no_post_resent),
        cmocka_unit_test(test_connection_close),
        cmocka_unit_test(test_timeout_and_refused),
        cmocka_unit_test(test_name_lookup),
        cmocka_unit_test_setup_teardown(test_tls_verify_and_resume, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_refusals, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_proxies, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
