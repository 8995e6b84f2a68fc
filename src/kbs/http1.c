/*
 * http1.c - the KBS server's HTTP/1.1 request head parser (see http1.h).
 *
 * Strict where leniency would let two parties read one request differently (RFC 9112 §6.3,
 * §11.2): a transfer coding is refused rather than ignored, differing Content-Length fields
 * are refused, so are folded lines, whitespace before a field's colon, bare CRs and NULs.
 * Lenient only where no ambiguity arises: a bare LF ends a line, empty lines before the
 * request line are skipped, HTTP/1.x above 1.1 is served as 1.1.
 */
#include <string.h>

#include "kbs/http1.h"

/* RFC 9110 §5.6.2 tchar */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static bool ieq(kbs_http_span a, const char *lit)
{
    size_t n = strlen(lit);
    if (a.n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a.s[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

static kbs_http_span trim_ows(kbs_http_span v)
{
    while (v.n && (v.s[0] == ' ' || v.s[0] == '\t')) {
        v.s++;
        v.n--;
    }
    while (v.n && (v.s[v.n - 1] == ' ' || v.s[v.n - 1] == '\t'))
        v.n--;
    return v;
}

/* The line at *@pos without its ending, *@pos moved past it; false when its LF has not come. */
static bool next_line(kbs_http_span *line, const char *buf, size_t len, size_t *pos)
{
    const char *nl = memchr(buf + *pos, '\n', len - *pos);
    if (!nl)
        return false;
    size_t end = (size_t)(nl - buf);
    line->s = buf + *pos;
    line->n = end - *pos;
    if (line->n && line->s[line->n - 1] == '\r')
        line->n--;
    *pos = end + 1;
    return true;
}

/* Bytes a field value may hold: visible ASCII, obs-text, SP and HTAB (no CR, LF, NUL, DEL). */
static bool field_value_ok(kbs_http_span v)
{
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* "HTTP/1.1" and friends: the minor version (1 for 1.1 and above), -505 another major, -400. */
static int parse_version(kbs_http_span v)
{
    if (v.n != 8 || memcmp(v.s, "HTTP/", 5) != 0 || v.s[6] != '.' || v.s[5] < '0' || v.s[5] > '9' ||
        v.s[7] < '0' || v.s[7] > '9')
        return -400;
    if (v.s[5] != '1')
        return -505;
    return v.s[7] == '0' ? 0 : 1;
}

static int parse_request_line(kbs_http_req *out, kbs_http_span l)
{
    const char *sp1 = memchr(l.s, ' ', l.n);
    if (!sp1 || sp1 == l.s)
        return -400;
    out->method = (kbs_http_span){l.s, (size_t)(sp1 - l.s)};
    for (size_t i = 0; i < out->method.n; i++)
        if (!is_tchar((unsigned char)out->method.s[i]))
            return -400;
    const char *t = sp1 + 1, *end = l.s + l.n;
    const char *sp2 = memchr(t, ' ', (size_t)(end - t));
    if (!sp2 || sp2 == t)
        return -400;
    out->target = (kbs_http_span){t, (size_t)(sp2 - t)};
    for (size_t i = 0; i < out->target.n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= 0x20 || c >= 0x7f)
            return -400;
    }
    if (t[0] != '/')
        return -400; /* only origin-form: no proxy requests, no "*" */
    if (out->target.n > KBS_HTTP_TARGET_MAX)
        return -414;
    int minor = parse_version((kbs_http_span){sp2 + 1, (size_t)(end - sp2 - 1)});
    if (minor < 0)
        return minor;
    out->minor = minor;
    return 0;
}

/* A Content-Length value: digits only; a value past 2^64 saturates (the caller refuses it). */
static int parse_length(kbs_http_req *out, kbs_http_span v)
{
    if (!v.n)
        return -400;
    uint64_t n = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.s[i] < '0' || v.s[i] > '9')
            return -400;
        unsigned d = (unsigned)(v.s[i] - '0');
        n = n > (UINT64_MAX - d) / 10 ? UINT64_MAX : n * 10 + d;
    }
    if (out->has_length && out->content_length != n)
        return -400;
    out->has_length = true;
    out->content_length = n;
    return 0;
}

/* Connection: a comma-separated list of tokens. */
static void parse_connection(bool *close, bool *keep, kbs_http_span v)
{
    while (v.n) {
        const char *c = memchr(v.s, ',', v.n);
        size_t n = c ? (size_t)(c - v.s) : v.n;
        kbs_http_span tok = trim_ows((kbs_http_span){v.s, n});
        if (ieq(tok, "close"))
            *close = true;
        else if (ieq(tok, "keep-alive"))
            *keep = true;
        v.s += c ? n + 1 : n;
        v.n -= c ? n + 1 : n;
    }
}

static int parse_field(kbs_http_req *out, bool *close, bool *keep, kbs_http_span l)
{
    const char *colon = memchr(l.s, ':', l.n);
    if (!colon || colon == l.s)
        return -400;
    kbs_http_span name = {l.s, (size_t)(colon - l.s)};
    for (size_t i = 0; i < name.n; i++)
        if (!is_tchar((unsigned char)name.s[i]))
            return -400; /* whitespace before the colon included (RFC 9112 §5.1) */
    kbs_http_span v = {colon + 1, l.n - name.n - 1};
    if (!field_value_ok(v))
        return -400;
    v = trim_ows(v);
    if (ieq(name, "content-length"))
        return parse_length(out, v);
    if (ieq(name, "transfer-encoding"))
        return -501;
    if (ieq(name, "connection"))
        parse_connection(close, keep, v);
    else if (ieq(name, "expect")) {
        if (!ieq(v, "100-continue"))
            return -417;
        out->expect_continue = true;
    } else if (ieq(name, "cookie")) {
        if (!out->cookie.s)
            out->cookie = v;
    } else if (ieq(name, "authorization")) {
        if (out->authorization.s)
            return -400; /* two credentials: which one would be checked? */
        out->authorization = v;
    }
    return 0;
}

int kbs_http_parse_head(kbs_http_req *out, const char *buf, size_t len)
{
    memset(out, 0, sizeof(*out));
    size_t lim = len < KBS_HTTP_HEAD_MAX ? len : KBS_HTTP_HEAD_MAX;
    /* Only the first KBS_HTTP_HEAD_MAX bytes are looked at: a longer head is refused. */
    size_t pos = 0;
    kbs_http_span l;
    unsigned empty = 0;
    do {
        if (!next_line(&l, buf, lim, &pos))
            return len >= KBS_HTTP_HEAD_MAX ? -431 : 0;
        if (l.n == 0 && ++empty > KBS_HTTP_EMPTY_LINES_MAX)
            return -400;
    } while (l.n == 0);
    if (memchr(l.s, '\r', l.n) || memchr(l.s, '\0', l.n))
        return -400;
    int r = parse_request_line(out, l);
    if (r < 0)
        return r;
    bool close = false, keep = false;
    for (unsigned fields = 0;; fields++) {
        if (!next_line(&l, buf, lim, &pos))
            return len >= KBS_HTTP_HEAD_MAX ? -431 : 0;
        if (l.n == 0)
            break;
        if (fields == KBS_HTTP_HEADERS_MAX)
            return -431;
        if (l.s[0] == ' ' || l.s[0] == '\t')
            return -400; /* obs-fold */
        if ((r = parse_field(out, &close, &keep, l)) < 0)
            return r;
    }
    out->keep_alive = !close && (out->minor >= 1 || keep);
    out->head_len = pos;
    return (int)pos;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool kbs_http_split_target(char *path, size_t path_size, kbs_http_span *query, kbs_http_span target)
{
    const char *q = memchr(target.s, '?', target.n);
    size_t plen = q ? (size_t)(q - target.s) : target.n;
    *query = q ? (kbs_http_span){q + 1, target.n - plen - 1} : (kbs_http_span){NULL, 0};
    size_t o = 0;
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)target.s[i];
        if (c == '%') {
            int hi = i + 2 < plen ? hexval((unsigned char)target.s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)target.s[i + 2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0))
                return false;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (o + 1 >= path_size)
            return false;
        path[o++] = (char)c;
    }
    if (o >= path_size)
        return false;
    path[o] = '\0';
    return true;
}

const char *kbs_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
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
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status >= 500 ? "Internal Server Error" : "Error";
    }
}
