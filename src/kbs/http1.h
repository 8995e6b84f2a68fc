/*
 * http1.h - the KBS server's HTTP/1.1 request head parser: a pure function over the bytes a
 * client sent, so that unit tests and fuzz/fuzz_kbs_http1.c drive it with arbitrary input.
 *
 * Every client is untrusted (an attester, or anyone who can reach the port). The parser reads
 * at most KBS_HTTP_HEAD_MAX bytes and KBS_HTTP_HEADERS_MAX header lines, accepts only the
 * request forms the KBS serves (origin-form targets, HTTP/1.0 and 1.1, bodies delimited by
 * Content-Length) and refuses the rest with the status to answer, so that nothing ambiguous
 * (two differing lengths, a transfer coding, folded or malformed lines, a NUL anywhere) is ever
 * interpreted. The results point into the caller's buffer; nothing is allocated.
 */
#ifndef CISTA_KBS_HTTP1_H
#define CISTA_KBS_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KBS_HTTP_HEAD_MAX ((size_t)16 << 10) /* request line + header lines */
#define KBS_HTTP_HEADERS_MAX 100             /* header lines per request */
#define KBS_HTTP_TARGET_MAX 1024             /* request-target bytes (path + query) */
#define KBS_HTTP_EMPTY_LINES_MAX 4           /* empty lines skipped before a request line */

typedef struct {
    const char *s;
    size_t n;
} kbs_http_span;

typedef struct {
    kbs_http_span method;        /* a token: "GET", "POST", ... */
    kbs_http_span target;        /* origin-form: starts with '/' */
    int minor;                   /* HTTP/1.<minor>: 0 or 1 */
    bool has_length;             /* a Content-Length was sent */
    uint64_t content_length;     /* 0 without one */
    kbs_http_span cookie;        /* the first Cookie field's value; .s NULL: none */
    kbs_http_span authorization; /* the Authorization field's value; .s NULL: none */
    bool keep_alive;             /* the connection may serve another request after this one */
    bool expect_continue;        /* "Expect: 100-continue" */
    size_t head_len;             /* bytes of the head, its final empty line included */
} kbs_http_req;

/*
 * Parse the request head at the start of @buf (@len bytes received so far; up to
 * KBS_HTTP_EMPTY_LINES_MAX empty lines before the request line are skipped, as RFC 9112 allows).
 * Returns the head's length (> 0) once its empty line is in @buf, 0 when more bytes are needed (and
 * fewer than KBS_HTTP_HEAD_MAX have come), or the negated HTTP status to refuse the request with:
 * -400 malformed, -414 target too long, -431 head too large, -501 a transfer coding (only
 * Content-Length bodies), -505 not HTTP/1.x, -417 an expectation other than 100-continue. Lines end
 * in CRLF or a bare LF.
 */
int kbs_http_parse_head(kbs_http_req *out, const char *buf, size_t len);

/*
 * Split an origin-form @target into its percent-decoded path (NUL-terminated into @path, at
 * most @path_size bytes with the NUL) and its raw query (into *@query, NULL when there is none;
 * it points into @target). False when the path does not decode (a bad escape, an encoded NUL)
 * or does not fit.
 */
bool kbs_http_split_target(char *path, size_t path_size, kbs_http_span *query,
                           kbs_http_span target);

/* The reason phrase of a status the KBS sends ("Not Found"). */
const char *kbs_http_reason(int status);

#endif
