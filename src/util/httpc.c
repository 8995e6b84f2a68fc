/*
 * httpc.c - a small HTTP/1.1 client over TCP or TLS (see httpc.h).
 *
 * Layout: the pure parts first (URLs, no_proxy, cookies, the response parser), then the
 * connection (non-blocking sockets, poll() deadlines, TLS through a socket BIO of our own that
 * sends with MSG_NOSIGNAL, so that a peer's close never raises SIGPIPE in the caller's process),
 * then requests.
 */
#include "util/httpc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "util/util.h"

#ifndef CISTA_VERSION
#define CISTA_VERSION "unknown"
#endif

#define CHUNK_LINE_MAX 4096 /* a chunk-size line with its extensions */
#define INTERIM_MAX 16      /* 1xx responses before the final one */

/* ---- small helpers ---- */

static bool is_tchar(int ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_token(const char *s, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* A header value we send: no CR, LF or other control characters but tab. */
static bool is_field_value(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    return true;
}

static bool is_ows(int ch)
{
    return ch == ' ' || ch == '\t';
}

/* Trim optional whitespace around s[0..*n). */
static const char *trim(const char *s, size_t *n)
{
    while (*n && is_ows((unsigned char)s[0])) {
        s++;
        (*n)--;
    }
    while (*n && is_ows((unsigned char)s[*n - 1]))
        (*n)--;
    return s;
}

static bool ieq(const char *a, size_t an, const char *b)
{
    return strlen(b) == an && strncasecmp(a, b, an) == 0;
}

static void free_secret_str(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* Up to @max bytes of untrusted @s for an error message, control bytes as '?'. */
static const char *shown(char *out, size_t out_size, const char *s, size_t n, size_t max)
{
    if (n > max)
        n = max;
    if (n >= out_size)
        n = out_size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
    }
    out[n] = '\0';
    return out;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "4 MiB" or "1000 bytes", for limit messages. */
static char *size_str(size_t n)
{
    if (n >= (1u << 20) && n % (1u << 20) == 0)
        return xasprintf("%zu MiB", n >> 20);
    if (n >= 1024 && n % 1024 == 0)
        return xasprintf("%zu KiB", n >> 10);
    return xasprintf("%zu bytes", n);
}

/* ---- URLs ---- */

void httpc_url_clear(httpc_url *u)
{
    free(u->host);
    free(u->authority);
    free(u->host_hdr);
    free(u->base);
    memset(u, 0, sizeof(*u));
}

static bool is_ipv4(const char *s)
{
    struct in_addr a;
    return inet_pton(AF_INET, s, &a) == 1;
}

static bool is_ipv6(const char *s)
{
    struct in6_addr a;
    return inet_pton(AF_INET6, s, &a) == 1;
}

/* A DNS name as we accept it: letters, digits, '-', '_', dot-separated non-empty labels. */
static bool is_dns_name(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (!n || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (!label)
                return false;
            label = 0;
        } else if (isalnum((unsigned char)ch) || ch == '-' || ch == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return true;
}

static int url_parse(httpc_url *out, const char *url, bool proxy, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    const char *what = proxy ? "proxy URL" : "URL";
    for (const char *s = url; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return err_set(err, -EINVAL,
                           "%s \"%s\": spaces and control or non-ASCII characters "
                           "are not allowed",
                           what, proxy ? "(hidden)" : url);
    /* A proxy URL may hold credentials: never repeat it whole in a message. */
    const char *shown = proxy && strchr(url, '@') ? "(hidden)" : url;
    const char *p = url;
    if (!strncasecmp(p, "https://", 8)) {
        if (proxy)
            return err_set(err, -EINVAL,
                           "%s %s: only http:// proxies are supported (an HTTPS connection to "
                           "the proxy is not)",
                           what, shown);
        out->https = true;
        p += 8;
    } else if (!strncasecmp(p, "http://", 7)) {
        p += 7;
    } else if (!proxy || strstr(p, "://")) {
        return err_set(err, -EINVAL, "%s %s: the scheme must be %s", what, shown,
                       proxy ? "http:// (socks and https proxies are not supported)"
                             : "https:// or http://");
    }
    if (strchr(p, '#'))
        return err_set(err, -EINVAL, "%s %s: a fragment (#...) is not allowed", what, shown);
    if (strchr(p, '?'))
        return err_set(err, -EINVAL, "%s %s: a query (?...) is not allowed", what, shown);
    size_t alen = strcspn(p, "/");
    const char *path = p + alen;
    if (memchr(p, '@', alen))
        return err_set(err, -EINVAL, "%s %s: credentials (user@host) are not supported", what,
                       shown);
    if (!alen)
        return err_set(err, -EINVAL, "%s %s: no host", what, shown);
    _cleanup_free_ char *auth = xstrndup(p, alen);
    char *port_s = NULL;
    if (auth[0] == '[') {
        char *close = strchr(auth, ']');
        if (!close)
            return err_set(err, -EINVAL, "%s %s: unterminated IPv6 literal", what, shown);
        *close = 0;
        if (strchr(auth + 1, '%'))
            return err_set(err, -EINVAL, "%s %s: IPv6 zone identifiers are not supported", what,
                           shown);
        if (!is_ipv6(auth + 1))
            return err_set(err, -EINVAL, "%s %s: \"%s\" is not an IPv6 address", what, shown,
                           auth + 1);
        if (close[1] == ':')
            port_s = close + 2;
        else if (close[1])
            return err_set(err, -EINVAL, "%s %s: unexpected characters after the IPv6 literal",
                           what, shown);
        out->host = xstrdup(auth + 1);
        out->host_is_ip = true;
    } else {
        char *colon = strchr(auth, ':');
        if (colon) {
            *colon = 0;
            port_s = colon + 1;
        }
        if (!*auth)
            return err_set(err, -EINVAL, "%s %s: no host", what, shown);
        if (is_ipv4(auth)) {
            out->host_is_ip = true;
        } else if (strspn(auth, "0123456789.") == strlen(auth)) {
            return err_set(err, -EINVAL, "%s %s: \"%s\" is not an IPv4 address", what, shown, auth);
        } else if (!is_dns_name(auth)) {
            return err_set(err, -EINVAL, "%s %s: \"%s\" is not a valid host name", what, shown,
                           auth);
        } else if (auth[strlen(auth) - 1] == '.') {
            auth[strlen(auth) - 1] = 0; /* the root: for SNI and the certificate, without */
        }
        out->host = xstrdup(auth);
    }
    unsigned long port = proxy ? 1080 : out->https ? 443 : 80;
    unsigned long dflt = port;
    if (port_s) {
        size_t n = strlen(port_s);
        if (!n || n > 5 || strspn(port_s, "0123456789") != n ||
            (port = strtoul(port_s, NULL, 10)) == 0 || port > 65535) {
            httpc_url_clear(out);
            return err_set(err, -EINVAL, "%s %s: bad port \"%s\" (1-65535)", what, shown, port_s);
        }
    }
    out->port = (uint16_t)port;
    bool v6 = strchr(out->host, ':') != NULL;
    out->authority = xasprintf(v6 ? "[%s]:%u" : "%s:%u", out->host, out->port);
    out->host_hdr =
        port == dflt && !proxy ? xasprintf(v6 ? "[%s]" : "%s", out->host) : xstrdup(out->authority);
    size_t plen = strlen(path);
    while (plen && path[plen - 1] == '/')
        plen--;
    if (proxy && plen) {
        httpc_url_clear(out);
        return err_set(err, -EINVAL, "%s %s: a path is not allowed", what, shown);
    }
    out->base = xstrndup(path, plen);
    return 0;
}

int httpc_url_parse(httpc_url *out, const char *url, cista_error **err)
{
    return url_parse(out, url, false, err);
}

int httpc_proxy_url_parse(httpc_url *out, const char *url, cista_error **err)
{
    return url_parse(out, url, true, err);
}

/* ---- no_proxy ---- */

/* Canonical form of an IP literal (brackets removed), or NULL for a name. */
static bool ip_canon(char *out, size_t size, const char *s, size_t n)
{
    char tmp[INET6_ADDRSTRLEN + 2];
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, tmp, &a4) == 1)
        return inet_ntop(AF_INET, &a4, out, (socklen_t)size) != NULL;
    if (inet_pton(AF_INET6, tmp, &a6) == 1)
        return inet_ntop(AF_INET6, &a6, out, (socklen_t)size) != NULL;
    return false;
}

/* Whether IP literal @host (canonical) lies in "ADDR/BITS" @e (@n bytes), as curl reads them. */
static bool in_cidr(const char *host, const char *e, size_t n)
{
    const char *slash = memchr(e, '/', n);
    char addr[INET6_ADDRSTRLEN + 2], bits_s[8];
    size_t an = slash ? (size_t)(slash - e) : 0, bn = slash ? n - an - 1 : 0;
    if (!slash || !an || an >= sizeof(addr) || !bn || bn >= sizeof(bits_s))
        return false;
    memcpy(addr, e, an);
    addr[an] = 0;
    memcpy(bits_s, slash + 1, bn);
    bits_s[bn] = 0;
    char *end;
    long bits = strtol(bits_s, &end, 10);
    uint8_t net[16], ip[16];
    size_t len;
    if (inet_pton(AF_INET, addr, net) == 1 && inet_pton(AF_INET, host, ip) == 1)
        len = 4;
    else if (inet_pton(AF_INET6, addr, net) == 1 && inet_pton(AF_INET6, host, ip) == 1)
        len = 16;
    else
        return false;
    if (*end || bits < 0 || (size_t)bits > len * 8)
        return false;
    size_t full = (size_t)bits / 8, rest = (size_t)bits % 8;
    if (memcmp(net, ip, full))
        return false;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return !rest || (net[full] & mask) == (ip[full] & mask);
}

bool httpc_no_proxy_match(const char *no_proxy, const char *host)
{
    if (!no_proxy || !host)
        return false;
    size_t hn = strlen(host);
    char hip[INET6_ADDRSTRLEN];
    bool host_ip = ip_canon(hip, sizeof(hip), host, hn);
    while (hn && host[hn - 1] == '.')
        hn--;
    const char *p = no_proxy;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *e = trim(p, &n);
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
        if (n == 1 && e[0] == '*')
            return true;
        char eip[INET6_ADDRSTRLEN];
        if (memchr(e, '/', n)) { /* a CIDR range: for IP literals only */
            if (host_ip && in_cidr(hip, e, n))
                return true;
            continue;
        }
        if (ip_canon(eip, sizeof(eip), e, n)) {
            if (host_ip && !strcmp(eip, hip))
                return true;
            continue;
        }
        if (host_ip)
            continue;
        while (n && e[0] == '.') {
            e++;
            n--;
        }
        while (n && e[n - 1] == '.')
            n--;
        if (!n || n > hn)
            continue;
        if (strncasecmp(host + hn - n, e, n) == 0 && (n == hn || host[hn - n - 1] == '.'))
            return true;
    }
    return false;
}

/* ---- cookies ---- */

static void cookie_free(httpc_cookie *k)
{
    free_secret_str(k->name);
    free_secret_str(k->value);
    memset(k, 0, sizeof(*k));
}

static void jar_remove(httpc_jar *j, size_t i)
{
    cookie_free(&j->items[i]);
    memmove(&j->items[i], &j->items[i + 1], (j->count - i - 1) * sizeof(j->items[0]));
    j->count--;
    memset(&j->items[j->count], 0, sizeof(j->items[0]));
}

void httpc_jar_clear(httpc_jar *j)
{
    for (size_t i = 0; i < j->count; i++)
        cookie_free(&j->items[i]);
    j->count = 0;
}

/* RFC 6265 5.1.1 delimiters of a cookie-date. */
static bool date_delim(int ch)
{
    return ch == 0x09 || (ch >= 0x20 && ch <= 0x2f) || (ch >= 0x3b && ch <= 0x40) ||
           (ch >= 0x5b && ch <= 0x60) || (ch >= 0x7b && ch <= 0x7e);
}

/* 1*@max digits at s, followed by the end of the token or a non-digit: the value, or -1. */
static int lead_digits(const char *s, size_t n, size_t min, size_t max, size_t *out_len)
{
    size_t i = 0;
    int v = 0;
    while (i < n && i < max + 1 && isdigit((unsigned char)s[i]))
        v = v * 10 + (s[i++] - '0');
    if (i < min || i > max)
        return -1;
    *out_len = i;
    return v;
}

/* An Expires value (RFC 6265 5.1.1); -1 when it is not a date. */
static int64_t cookie_date(const char *s, size_t n)
{
    static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    int hh = -1, mi = -1, ss = -1, day = -1, mon = -1, year = -1;
    size_t i = 0;
    while (i < n) {
        while (i < n && date_delim((unsigned char)s[i]))
            i++;
        size_t start = i;
        while (i < n && !date_delim((unsigned char)s[i]))
            i++;
        const char *t = s + start;
        size_t tn = i - start, k = 0;
        if (!tn)
            continue;
        if (hh < 0) {
            size_t a = 0, b = 0, c = 0;
            int h = lead_digits(t, tn, 1, 2, &a);
            if (h >= 0 && a < tn && t[a] == ':') {
                int m = lead_digits(t + a + 1, tn - a - 1, 1, 2, &b);
                if (m >= 0 && a + 1 + b < tn && t[a + 1 + b] == ':') {
                    int sec = lead_digits(t + a + b + 2, tn - a - b - 2, 1, 2, &c);
                    if (sec >= 0) {
                        hh = h;
                        mi = m;
                        ss = sec;
                        continue;
                    }
                }
            }
        }
        if (day < 0) {
            int d = lead_digits(t, tn, 1, 2, &k);
            if (d >= 0 && (k == tn || !isdigit((unsigned char)t[k]))) {
                day = d;
                continue;
            }
        }
        if (mon < 0 && tn >= 3) {
            bool found = false;
            for (int m = 0; m < 12 && !found; m++)
                if (!strncasecmp(t, months + 3 * m, 3)) {
                    mon = m;
                    found = true;
                }
            if (found)
                continue;
        }
        if (year < 0) {
            int y = lead_digits(t, tn, 2, 4, &k);
            if (y >= 0) {
                year = y;
                continue;
            }
        }
    }
    if (year >= 70 && year <= 99)
        year += 1900;
    else if (year >= 0 && year <= 69)
        year += 2000;
    if (hh < 0 || day < 1 || day > 31 || mon < 0 || year < 1601 || hh > 23 || mi > 59 || ss > 59)
        return INT64_MIN; /* not a date (before 1970 is one: it deletes the cookie) */
    struct tm tm = {.tm_sec = ss,
                    .tm_min = mi,
                    .tm_hour = hh,
                    .tm_mday = day,
                    .tm_mon = mon,
                    .tm_year = year - 1900};
    return (int64_t)timegm(&tm);
}

int httpc_jar_set(httpc_jar *j, const char *set_cookie, time_t now, cista_error **err)
{
    size_t n = strcspn(set_cookie, ";");
    const char *pair = trim(set_cookie, &n);
    const char *eq = memchr(pair, '=', n);
    if (!eq)
        return err_set(err, -EINVAL, "Set-Cookie: no name=value");
    size_t nn = (size_t)(eq - pair), vn = n - nn - 1;
    const char *name = trim(pair, &nn);
    const char *value = trim(eq + 1, &vn);
    if (!is_token(name, nn))
        return err_set(err, -EINVAL, "Set-Cookie: the cookie name is empty or not a token");
    for (size_t i = 0; i < vn; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (ch < 0x20 || ch == 0x7f)
            return err_set(err, -EINVAL, "Set-Cookie: control character in the value of %.*s",
                           (int)(nn > 64 ? 64 : nn), name);
    }
    if (nn + vn > HTTPC_COOKIE_SIZE_MAX)
        return err_set(err, -EMSGSIZE, "Set-Cookie: cookie of %zu bytes (at most %d)", nn + vn,
                       HTTPC_COOKIE_SIZE_MAX);
    /* Attributes: only the lifetime matters here. Max-Age wins over Expires (RFC 6265 5.3). */
    bool have_max_age = false, remove = false;
    int64_t expires = 0;
    const char *a = set_cookie + strcspn(set_cookie, ";");
    while (*a == ';') {
        a++;
        size_t an = strcspn(a, ";");
        size_t kn = strcspn(a, "=");
        if (kn > an)
            kn = an;
        size_t kn2 = kn;
        const char *key = trim(a, &kn2);
        size_t avn = kn < an ? an - kn - 1 : 0;
        const char *av = trim(a + kn + (kn < an), &avn);
        if (ieq(key, kn2, "max-age") && avn && (av[0] == '-' || isdigit((unsigned char)av[0]))) {
            size_t d = av[0] == '-' ? 1 : 0;
            bool ok = d < avn;
            int64_t secs = 0;
            for (size_t i = d; i < avn && ok; i++) {
                if (!isdigit((unsigned char)av[i]))
                    ok = false;
                else if (secs < INT32_MAX)
                    secs = secs * 10 + (av[i] - '0');
            }
            if (ok) {
                have_max_age = true;
                remove = d || secs == 0;
                expires = remove ? 0 : (int64_t)now + secs;
            }
        } else if (ieq(key, kn2, "expires") && !have_max_age) {
            int64_t t = cookie_date(av, avn);
            if (t != INT64_MIN) {
                remove = t <= (int64_t)now;
                expires = remove ? 0 : t;
            }
        }
        a += an;
    }
    size_t i = 0;
    while (i < j->count && !(strlen(j->items[i].name) == nn && !memcmp(j->items[i].name, name, nn)))
        i++;
    if (remove) {
        if (i < j->count)
            jar_remove(j, i);
        return 0;
    }
    if (i == j->count) {
        for (size_t k = 0; j->count == HTTPC_COOKIES_MAX && k < j->count;) {
            if (j->items[k].expires && j->items[k].expires <= now)
                jar_remove(j, k); /* expired ones make room first */
            else
                k++;
        }
        i = j->count;
        if (j->count == HTTPC_COOKIES_MAX)
            return err_set(err, -ENOSPC, "Set-Cookie: already %d cookies kept", HTTPC_COOKIES_MAX);
        j->items[i].name = xstrndup(name, nn);
        j->count++;
    } else {
        free_secret_str(j->items[i].value);
    }
    j->items[i].value = xstrndup(value, vn);
    j->items[i].expires = (time_t)expires;
    return 0;
}

char *httpc_jar_header(const httpc_jar *j, time_t now)
{
    cbuf b;
    buf_init(&b, 0, true);
    for (size_t i = 0; i < j->count; i++) {
        const httpc_cookie *k = &j->items[i];
        if (k->expires && k->expires <= now)
            continue;
        if (b.size)
            buf_puts(&b, "; ");
        buf_puts(&b, k->name);
        buf_puts(&b, "=");
        buf_puts(&b, k->value);
    }
    if (!b.size) {
        buf_free(&b);
        return NULL;
    }
    return (char *)buf_steal(&b, NULL);
}

/* ---- the response parser ---- */

enum {
    P_HEAD,       /* status line and headers */
    P_LENGTH,     /* a Content-Length body */
    P_CLOSE,      /* a body delimited by the end of the connection */
    P_CHUNK_SIZE, /* a chunk-size line */
    P_CHUNK_DATA, /* chunk data */
    P_CHUNK_END,  /* the CRLF after chunk data */
    P_TRAILER,    /* trailer lines after the last chunk */
    P_DONE,
};

void httpc_parser_init(httpc_parser *p, bool no_body, size_t body_max)
{
    memset(p, 0, sizeof(*p));
    p->no_body = no_body;
    buf_init(&p->body, body_max ? body_max : HTTPC_BODY_MAX_DEFAULT, true);
    /* Cookies in the head may be session secrets. */
    buf_init(&p->head, HTTPC_HEAD_MAX, true);
    buf_init(&p->line, CHUNK_LINE_MAX, true);
    p->state = P_HEAD;
}

static void clear_cookies(httpc_parser *p)
{
    for (size_t i = 0; i < p->set_cookie_count; i++)
        free_secret_str(p->set_cookie[i]);
    free(p->set_cookie);
    p->set_cookie = NULL;
    p->set_cookie_count = 0;
}

void httpc_parser_clear(httpc_parser *p)
{
    buf_free(&p->body);
    buf_free(&p->head);
    buf_free(&p->line);
    clear_cookies(p);
}

bool httpc_parser_close_delimited(const httpc_parser *p)
{
    return p->state == P_CLOSE;
}

static int too_large(const httpc_parser *p, cista_error **err)
{
    _cleanup_free_ char *lim = size_str(p->body.max);
    return err_set(err, -EMSGSIZE, "response larger than %s", lim);
}

/* A Content-Length value: a list of equal decimal numbers ("5" or "5, 5"). */
static int parse_length(uint64_t *out, const char *v, size_t n, cista_error **err)
{
    bool have = false;
    uint64_t first = 0;
    size_t i = 0;
    do {
        size_t en = strcspn(v + i, ",");
        if (en > n - i)
            en = n - i;
        size_t tn = en;
        const char *t = trim(v + i, &tn);
        uint64_t x = 0;
        if (!tn)
            return err_set(err, -EPROTO, "Content-Length \"%.*s\" is not a number",
                           (int)(n > 40 ? 40 : n), v);
        for (size_t k = 0; k < tn; k++) {
            if (!isdigit((unsigned char)t[k]))
                return err_set(err, -EPROTO, "Content-Length \"%.*s\" is not a number",
                               (int)(n > 40 ? 40 : n), v);
            unsigned d = (unsigned)(t[k] - '0');
            if (x > (UINT64_MAX - d) / 10)
                return err_set(err, -EPROTO, "Content-Length \"%.*s\" overflows",
                               (int)(n > 40 ? 40 : n), v);
            x = x * 10 + d;
        }
        if (have && x != first)
            return err_set(err, -EPROTO, "Content-Length lists different values (%.*s)",
                           (int)(n > 40 ? 40 : n), v);
        have = true;
        first = x;
        i += en + 1;
    } while (i <= n);
    *out = first;
    return 0;
}

/* Parse the complete head in p->head (terminated by its empty line) and pick the framing. */
static int parse_head(httpc_parser *p, cista_error **err)
{
    const char *h = (const char *)p->head.data;
    size_t size = p->head.size;
    if (memchr(h, 0, size))
        return err_set(err, -EPROTO, "NUL byte in the response head");
    /* Status line: HTTP/1.x SP 3DIGIT [SP reason]. */
    size_t ln = strcspn(h, "\n");
    if (ln >= size)
        return err_set(err, -EPROTO, "response head is not terminated");
    size_t sl = ln && h[ln - 1] == '\r' ? ln - 1 : ln;
    if (sl < 12 || memcmp(h, "HTTP/1.", 7) || !isdigit((unsigned char)h[7]) || h[8] != ' ' ||
        !isdigit((unsigned char)h[9]) || !isdigit((unsigned char)h[10]) ||
        !isdigit((unsigned char)h[11]) || (sl > 12 && h[12] != ' ')) {
        char sh[64];
        return err_set(err, -EPROTO, "not an HTTP/1.x status line: \"%s\"",
                       shown(sh, sizeof(sh), h, sl, 60));
    }
    for (size_t i = 12; i < sl; i++) {
        unsigned char ch = (unsigned char)h[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return err_set(err, -EPROTO, "control character in the status line");
    }
    p->minor = h[7] - '0';
    p->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    if (p->status < 100 || p->status > 599)
        return err_set(err, -EPROTO, "status code %d is out of range", p->status);
    bool has_length = false, chunked = false, te = false;
    uint64_t length = 0;
    p->conn_close = p->conn_keep_alive = false;
    clear_cookies(p);
    size_t count = 0, off = ln + 1;
    for (;;) {
        const char *line = h + off;
        size_t n = strcspn(line, "\n");
        if (off + n >= size)
            return err_set(err, -EPROTO, "response head is not terminated");
        off += n + 1;
        if (n && line[n - 1] == '\r')
            n--;
        if (!n)
            break;
        if (++count > HTTPC_HEADERS_MAX)
            return err_set(err, -EPROTO, "more than %d header lines", HTTPC_HEADERS_MAX);
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)line[i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return err_set(err, -EPROTO, "control character in header line %zu", count);
        }
        if (is_ows((unsigned char)line[0]))
            return err_set(err, -EPROTO, "obsolete line folding in header line %zu", count);
        const char *colon = memchr(line, ':', n);
        size_t nn = colon ? (size_t)(colon - line) : 0;
        if (!colon || !is_token(line, nn))
            return err_set(err, -EPROTO, "header line %zu is not \"name: value\"", count);
        size_t vn = n - nn - 1;
        const char *v = trim(colon + 1, &vn);
        if (ieq(line, nn, "content-length")) {
            uint64_t x = 0;
            int r = parse_length(&x, v, vn, err);
            if (r < 0)
                return r;
            if (has_length && x != length)
                return err_set(err, -EPROTO, "two Content-Length headers disagree (%llu and %llu)",
                               (unsigned long long)length, (unsigned long long)x);
            has_length = true;
            length = x;
        } else if (ieq(line, nn, "transfer-encoding")) {
            /* A list of codings; chunked must come last and only once: we support no other. */
            size_t i = 0;
            while (i <= vn) {
                size_t en = strcspn(v + i, ",");
                if (en > vn - i)
                    en = vn - i;
                size_t tn = en;
                const char *t = trim(v + i, &tn);
                if (tn) {
                    if (!ieq(t, tn, "chunked") || chunked)
                        return err_set(err, -EPROTO,
                                       "Transfer-Encoding \"%.*s\" is not supported (only "
                                       "chunked)",
                                       (int)(vn > 40 ? 40 : vn), v);
                    chunked = true;
                }
                te = true;
                i += en + 1;
            }
        } else if (ieq(line, nn, "connection")) {
            size_t i = 0;
            while (i <= vn) {
                size_t en = strcspn(v + i, ",");
                if (en > vn - i)
                    en = vn - i;
                size_t tn = en;
                const char *t = trim(v + i, &tn);
                if (ieq(t, tn, "close"))
                    p->conn_close = true;
                else if (ieq(t, tn, "keep-alive"))
                    p->conn_keep_alive = true;
                i += en + 1;
            }
        } else if (ieq(line, nn, "set-cookie")) {
            p->set_cookie = xrealloc(p->set_cookie, (p->set_cookie_count + 1) * sizeof(char *));
            p->set_cookie[p->set_cookie_count++] = xstrndup(v, vn);
        }
    }
    if (te && !chunked)
        return err_set(err, -EPROTO, "empty Transfer-Encoding");
    if (te && p->minor == 0)
        return err_set(err, -EPROTO, "Transfer-Encoding in an HTTP/1.0 response");
    if (p->status >= 100 && p->status < 200)
        return 0; /* interim: the caller skips it */
    p->keep_alive = p->minor >= 1 ? !p->conn_close : p->conn_keep_alive && !p->conn_close;
    if (p->no_body || p->status == 204 || p->status == 304) {
        p->state = P_DONE;
    } else if (chunked) {
        /* With Content-Length too, the message may be an attempt at request smuggling
         * (RFC 9112 6.3): chunked wins, and the connection is not reused. */
        if (has_length)
            p->keep_alive = false;
        p->state = P_CHUNK_SIZE;
    } else if (has_length) {
        if (length > p->body.max)
            return too_large(p, err);
        p->remaining = length;
        buf_reserve(&p->body, (size_t)length);
        p->state = length ? P_LENGTH : P_DONE;
    } else {
        p->keep_alive = false;
        p->state = P_CLOSE;
    }
    return 0;
}

/* A complete chunk-size line (without its LF) in p->line. */
static int chunk_size_line(httpc_parser *p, cista_error **err)
{
    const char *s = (const char *)p->line.data;
    size_t n = p->line.size;
    if (n && s[n - 1] == '\r')
        n--;
    size_t i = 0;
    uint64_t v = 0;
    while (i < n && isxdigit((unsigned char)s[i])) {
        if (v > (UINT64_MAX >> 4))
            return err_set(err, -EPROTO, "chunk size overflows");
        int ch = tolower((unsigned char)s[i]);
        v = (v << 4) | (uint64_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
        i++;
    }
    if (!i)
        return err_set(err, -EPROTO, "chunk size is not a hexadecimal number");
    while (i < n && is_ows((unsigned char)s[i]))
        i++;
    if (i < n && s[i] != ';') {
        char sh[24];
        return err_set(err, -EPROTO, "chunk size followed by \"%s\"",
                       shown(sh, sizeof(sh), s + i, n - i, 20));
    }
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return err_set(err, -EPROTO, "control character in a chunk extension");
    }
    buf_reset(&p->line);
    if (!v) {
        p->state = P_TRAILER;
        return 0;
    }
    if (v > p->body.max - p->body.size)
        return too_large(p, err);
    p->remaining = v;
    p->state = P_CHUNK_DATA;
    return 0;
}

/* A complete trailer line (without its LF) in p->line. */
static int trailer_line(httpc_parser *p, cista_error **err)
{
    const char *s = (const char *)p->line.data;
    size_t n = p->line.size;
    if (n && s[n - 1] == '\r')
        n--;
    if (!n) {
        p->state = P_DONE;
        return 0;
    }
    if (++p->trailer_count > HTTPC_HEADERS_MAX)
        return err_set(err, -EPROTO, "more than %d trailer lines", HTTPC_HEADERS_MAX);
    const char *colon = memchr(s, ':', n);
    if (!colon || !is_token(s, (size_t)(colon - s)))
        return err_set(err, -EPROTO, "trailer line %zu is not \"name: value\"", p->trailer_count);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return err_set(err, -EPROTO, "control character in trailer line %zu", p->trailer_count);
    }
    buf_reset(&p->line);
    return 0;
}

/* Take bytes up to and including a LF into p->line; *used is how many. 1 when a line ended. */
static int take_line(httpc_parser *p, size_t *used, const uint8_t *d, size_t n, size_t limit,
                     const char *what, cista_error **err)
{
    const uint8_t *lf = memchr(d, '\n', n);
    size_t take = lf ? (size_t)(lf - d) + 1 : n;
    size_t keep = lf ? take - 1 : take;
    if (p->line.size + keep > limit) {
        _cleanup_free_ char *lim = size_str(limit);
        return err_set(err, -EPROTO, "%s longer than %s", what, lim);
    }
    buf_put(&p->line, d, keep);
    *used = take;
    return lf != NULL;
}

int httpc_parser_feed(httpc_parser *p, size_t *out_used, const uint8_t *data, size_t size,
                      cista_error **err)
{
    size_t off = 0;
    int r = 0;
    *out_used = 0;
    if (p->state == P_DONE)
        return 1;
    p->received += size;
    while (off < size && p->state != P_DONE) {
        const uint8_t *d = data + off;
        size_t n = size - off, used = 0;
        switch (p->state) {
        case P_HEAD: {
            /* Find the empty line that ends the head; line_size (bytes of the current line but
             * CRs) carries across feeds. */
            size_t i = 0;
            bool end = false;
            while (i < n && !end) {
                uint8_t ch = d[i++];
                if (ch == '\n') {
                    end = p->line_size == 0;
                    p->line_size = 0;
                } else if (ch != '\r') {
                    p->line_size++; /* a CR is checked by parse_head(): only before a LF */
                }
            }
            if (p->head.size + i > HTTPC_HEAD_MAX)
                return err_set(err, -EMSGSIZE, "response head larger than %zu KiB",
                               HTTPC_HEAD_MAX >> 10);
            buf_put(&p->head, d, i);
            used = i;
            if (end) {
                if ((r = parse_head(p, err)) < 0)
                    return r;
                p->line_size = 0;
                if (p->status < 200) {
                    if (p->status == 101)
                        return err_set(err, -EPROTO, "unexpected 101 Switching Protocols");
                    if (++p->interim > INTERIM_MAX)
                        return err_set(err, -EPROTO, "more than %d interim (1xx) responses",
                                       INTERIM_MAX);
                    buf_reset(&p->head);
                    clear_cookies(p);
                }
            }
            break;
        }
        case P_LENGTH:
        case P_CHUNK_DATA:
            used = n < p->remaining ? n : (size_t)p->remaining;
            if ((r = buf_append(&p->body, d, used, NULL)) < 0)
                return too_large(p, err);
            p->remaining -= used;
            if (!p->remaining)
                p->state = p->state == P_LENGTH ? P_DONE : P_CHUNK_END;
            break;
        case P_CLOSE:
            used = n;
            if ((r = buf_append(&p->body, d, used, NULL)) < 0)
                return too_large(p, err);
            break;
        case P_CHUNK_SIZE:
            if ((r = take_line(p, &used, d, n, CHUNK_LINE_MAX, "chunk-size line", err)) < 0)
                return r;
            if (r && (r = chunk_size_line(p, err)) < 0)
                return r;
            break;
        case P_CHUNK_END:
            if ((r = take_line(p, &used, d, n, 1, "chunk data", NULL)) < 0)
                return err_set(err, -EPROTO, "chunk data longer than its size");
            if (r) {
                if (p->line.size && p->line.data[0] != '\r')
                    return err_set(err, -EPROTO, "chunk data longer than its size");
                buf_reset(&p->line);
                p->state = P_CHUNK_SIZE;
            }
            break;
        case P_TRAILER:
            r = take_line(p, &used, d, n, HTTPC_HEAD_MAX, "trailer", NULL);
            p->trailer_size += used;
            if (r < 0 || p->trailer_size > HTTPC_HEAD_MAX)
                return err_set(err, -EMSGSIZE, "trailers larger than %zu KiB",
                               HTTPC_HEAD_MAX >> 10);
            if (r && (r = trailer_line(p, err)) < 0)
                return r;
            break;
        default:
            return err_set(err, -EPROTO, "response parser in a bad state");
        }
        off += used;
    }
    if (p->state != P_DONE)
        return 0;
    *out_used = off;
    p->received -= size - off;
    return 1;
}

int httpc_parser_eof(httpc_parser *p, cista_error **err)
{
    if (p->state == P_CLOSE)
        p->state = P_DONE;
    if (p->state == P_DONE)
        return 1;
    if (!p->received)
        return err_set(err, -EPROTO, "the server closed the connection without a response");
    if (p->state == P_HEAD)
        return err_set(err, -EPROTO, "the connection closed in the response head (truncated)");
    return err_set(err, -EPROTO,
                   "the connection closed after %zu bytes of the body (truncated response)",
                   p->body.size);
}

/* ---- the client ---- */

struct httpc {
    httpc_url url;
    httpc_url proxy; /* port 0: no proxy */
    long timeout;    /* seconds */
    size_t body_max;
    SSL_CTX *ctx;         /* https only */
    SSL_SESSION *session; /* of the last TLS connection, for resumption */
    bool resume;          /* keep and offer sessions (until httpc_disconnect(c, true)) */
    httpc_jar jar;
    /* The connection. */
    int fd;
    SSL *ssl;
    bool tls_ok;      /* handshake done and no fatal error: close with close_notify */
    bool unclean_eof; /* TLS ended without close_notify */
    unsigned served;  /* complete responses read on this connection */
};

/* A socket BIO that sends with MSG_NOSIGNAL (a closed peer must not raise SIGPIPE). */
static int bio_sock_write(BIO *b, const char *data, int size)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do
        n = send(fd, data, (size_t)size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    return (int)n;
}

static int bio_sock_read(BIO *b, char *data, int size)
{
    int fd = (int)(intptr_t)BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n;
    do
        n = recv(fd, data, (size_t)size, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_read(b);
    if (n == 0 && size > 0)
        BIO_set_flags(b, BIO_FLAGS_IN_EOF); /* what BIO_eof() reports: see bio_sock_ctrl() */
    return (int)n;
}

static long bio_sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    /* OpenSSL tells a TLS close without close_notify (a truncation) by BIO_eof() */
    if (cmd == BIO_CTRL_EOF)
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    if (cmd == BIO_C_GET_FD) { /* SSL_get_fd() */
        int fd = (int)(intptr_t)BIO_get_data(b);
        if (ptr)
            *(int *)ptr = fd;
        return fd;
    }
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_sock_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/*
 * One method for the process: BIO_get_new_index() hands out type numbers from a small
 * process-wide range, so a method per client would run out in a long-lived process. It stays
 * until the process exits.
 */
static BIO_METHOD *g_bio_sock;
static pthread_once_t g_bio_sock_once = PTHREAD_ONCE_INIT;

static void bio_sock_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cista socket");
    if (m && BIO_meth_set_write(m, bio_sock_write) && BIO_meth_set_read(m, bio_sock_read) &&
        BIO_meth_set_ctrl(m, bio_sock_ctrl) && BIO_meth_set_create(m, bio_sock_create))
        g_bio_sock = m;
    else
        BIO_meth_free(m);
}

BIO *httpc_socket_bio(int fd)
{
    pthread_once(&g_bio_sock_once, bio_sock_init);
    BIO *b = g_bio_sock ? BIO_new(g_bio_sock) : NULL;
    if (b)
        BIO_set_data(b, (void *)(intptr_t)fd);
    return b;
}

/* The TLS library tells us about each new session (TLS 1.3: after the handshake). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    httpc *c = SSL_get_app_data(ssl);
    if (!c || !c->resume)
        return 0;
    SSL_SESSION_free(c->session);
    c->session = sess;
    return 1; /* we keep the reference */
}

static int tls_setup(httpc *c, const httpc_opts *o, cista_error **err)
{
    if (!o->ca_file && !o->system_trust)
        return err_set(err, -EINVAL,
                       "%s: no trust anchors: give the CA file the server's certificate must "
                       "chain to, or allow the system trust store",
                       o->url);
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx)
        return err_set_ssl(err, -ENOMEM, "SSL_CTX_new");
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    /* records are decrypted in place: wipe OpenSSL's read buffer (a token, the cookie) too */
    SSL_CTX_set_options(c->ctx, SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_session_cache_mode(c->ctx,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ctx, on_new_session);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof(alpn) - 1);
    if (o->ca_file && SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL) != 1)
        return err_set_ssl(err, -EKEYREJECTED, "CA file %s: cannot load its certificates",
                           o->ca_file);
    if (o->system_trust && SSL_CTX_set_default_verify_paths(c->ctx) != 1)
        return err_set_ssl(err, -EKEYREJECTED, "the system trust store cannot be loaded");
    pthread_once(&g_bio_sock_once, bio_sock_init);
    if (!g_bio_sock)
        return err_set_ssl(err, -ENOMEM, "BIO_meth_new");
    c->resume = true;
    return 0;
}

/* The proxy the environment asks for, as curl reads it. */
static int proxy_setup(httpc *c, cista_error **err)
{
    const char *np = getenv("no_proxy");
    if (!np || !*np)
        np = getenv("NO_PROXY");
    const char *name = c->url.https ? "https_proxy" : "http_proxy";
    const char *v = getenv(name);
    if ((!v || !*v) && c->url.https) {
        name = "HTTPS_PROXY";
        v = getenv(name);
    }
    if (!v || !*v)
        return 0;
    if (np && httpc_no_proxy_match(np, c->url.host)) {
        log_debug("%s: no proxy (no_proxy names %s)", c->url.authority, c->url.host);
        return 0;
    }
    int r = httpc_proxy_url_parse(&c->proxy, v, err);
    if (r < 0)
        return err_wrap(err, "proxy from $%s", name);
    log_debug("%s: through the proxy %s (from $%s)%s", c->url.authority, c->proxy.authority, name,
              c->url.https ? ", CONNECT tunnel" : "");
    return 0;
}

int httpc_new(httpc **out, const httpc_opts *o, cista_error **err)
{
    *out = NULL;
    _cleanup_httpc_ httpc *c = xzalloc(sizeof(*c));
    c->fd = -1;
    int r = httpc_url_parse(&c->url, o->url ? o->url : "", err);
    if (r < 0)
        return r;
    c->timeout = o->timeout > 0 ? o->timeout : HTTPC_TIMEOUT_DEFAULT;
    if (c->timeout > 86400)
        c->timeout = 86400; /* a day: far beyond any use, and no overflow in milliseconds */
    c->body_max = o->body_max ? o->body_max : HTTPC_BODY_MAX_DEFAULT;
    if (c->url.https && (r = tls_setup(c, o, err)) < 0)
        return r;
    if ((r = proxy_setup(c, err)) < 0)
        return r;
    *out = steal_ptr(&c);
    return 0;
}

static void conn_close(httpc *c)
{
    if (c->ssl) {
        if (c->tls_ok && SSL_shutdown(c->ssl) < 0)
            ERR_clear_error();
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->tls_ok = c->unclean_eof = false;
    c->served = 0;
}

void httpc_disconnect(httpc *c, bool forget_session)
{
    conn_close(c);
    if (forget_session) {
        c->resume = false;
        SSL_SESSION_free(c->session);
        c->session = NULL;
    }
}

void httpc_cookies_clear(httpc *c)
{
    httpc_jar_clear(&c->jar);
}

void httpc_free(httpc *c)
{
    if (!c)
        return;
    conn_close(c);
    SSL_SESSION_free(c->session);
    SSL_CTX_free(c->ctx);
    httpc_jar_clear(&c->jar);
    httpc_url_clear(&c->url);
    httpc_url_clear(&c->proxy);
    free(c);
}

void httpc__freep(httpc **c)
{
    httpc_free(*c);
    *c = NULL;
}

/* ---- I/O with deadlines ---- */

/* Wait until @fd is ready for @events: 0, or -ETIMEDOUT at @deadline (ms, monotonic). */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return 0; /* also on POLLERR / POLLHUP: the next call reports it */
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static int timed_out(httpc *c, const char *phase, cista_error **err)
{
    return err_set(err, -ETIMEDOUT, "%s: timed out (the limit is %ld s per request)", phase,
                   c->timeout);
}

/* After a failed TLS call: wait for what it wants (0), or report the failure. */
static int tls_wait(httpc *c, int ret, int64_t deadline, const char *phase, cista_error **err)
{
    int e = SSL_get_error(c->ssl, ret);
    int r;
    if (e == SSL_ERROR_WANT_READ)
        r = wait_fd(c->fd, POLLIN, deadline);
    else if (e == SSL_ERROR_WANT_WRITE)
        r = wait_fd(c->fd, POLLOUT, deadline);
    else {
        int saved = errno;
        c->tls_ok = false;
        if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
            /* The transport failed, not TLS: the session stays good for resumption. */
            SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
            return saved ? err_set_sys(err, -ECONNREFUSED, "%s", phase)
                         : err_set(err, -ECONNREFUSED, "%s: the connection closed", phase);
        }
        return err_set_ssl(err, -ECONNREFUSED, "%s: TLS error", phase);
    }
    if (r == -ETIMEDOUT)
        return timed_out(c, phase, err);
    return r < 0 ? err_set_sys(err, -ECONNREFUSED, "%s: poll", phase) : 0;
}

static int conn_write(httpc *c, const uint8_t *data, size_t size, int64_t deadline,
                      cista_error **err)
{
    int r;
    while (size) {
        if (c->ssl) {
            size_t n = 0;
            ERR_clear_error();
            int ret = SSL_write_ex(c->ssl, data, size, &n);
            if (ret == 1) {
                data += n;
                size -= n;
            } else if ((r = tls_wait(c, ret, deadline, "sending the request", err)) < 0) {
                return r;
            }
            continue;
        }
        ssize_t n = send(c->fd, data, size, MSG_NOSIGNAL);
        if (n >= 0) {
            data += n;
            size -= (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if ((r = wait_fd(c->fd, POLLOUT, deadline)) == -ETIMEDOUT)
                return timed_out(c, "sending the request", err);
            if (r < 0)
                return err_set_sys(err, -ECONNREFUSED, "sending the request: poll");
        } else if (errno != EINTR) {
            return err_set_sys(err, -ECONNREFUSED, "sending the request");
        }
    }
    return 0;
}

/* Read some bytes: the count, 0 at the end of the connection, or an error. */
static ssize_t conn_read(httpc *c, uint8_t *buf, size_t size, int64_t deadline, cista_error **err)
{
    int r;
    for (;;) {
        if (c->ssl) {
            size_t n = 0;
            ERR_clear_error();
            int ret = SSL_read_ex(c->ssl, buf, size, &n);
            if (ret == 1)
                return (ssize_t)n;
            int e = SSL_get_error(c->ssl, ret);
            if (e == SSL_ERROR_ZERO_RETURN) {
                return 0;
            } else if (e == SSL_ERROR_SSL &&
                       ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
                /* Many servers close idle connections so; resuming the session stays fine
                 * (RFC 5246 7.2.1), but a body delimited by the close may be truncated. */
                ERR_clear_error();
                SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN);
                c->tls_ok = false;
                c->unclean_eof = true;
                return 0;
            }
            if ((r = tls_wait(c, ret, deadline, "reading the response", err)) < 0)
                return r;
            continue;
        }
        ssize_t n = recv(c->fd, buf, size, 0);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if ((r = wait_fd(c->fd, POLLIN, deadline)) == -ETIMEDOUT)
                return timed_out(c, "waiting for the response", err);
            if (r < 0)
                return err_set_sys(err, -ECONNREFUSED, "reading the response: poll");
        } else if (errno != EINTR) {
            return err_set_sys(err, -ECONNREFUSED, "reading the response");
        }
    }
}

/* ---- connecting ---- */

/*
 * What an asynchronous lookup reads and writes until it completes. On the heap, because a lookup
 * that timed out and cannot be cancelled (glibc's resolver thread is inside it) still owns it:
 * then it is left to that thread, a bounded leak, rather than freed under it.
 */
typedef struct {
    struct gaicb cb;
    struct addrinfo hints;
    char *name;
    char service[8];
} lookup;

static void lookup_free(lookup *l)
{
    free(l->name);
    free(l);
}

/*
 * Resolve @host within @deadline. getaddrinfo() itself waits as long as the resolver
 * configuration says (several servers × attempts × timeout, or forever on a stuck NSS module),
 * which would let a slow DNS hold a container's launch past every deadline; a literal address
 * needs no lookup.
 */
static int resolve(struct addrinfo **out, const char *host, unsigned port, bool numeric,
                   int64_t deadline, cista_error **err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = numeric ? AI_NUMERICHOST : 0};
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    if (numeric) {
        int g = getaddrinfo(host, service, &hints, out);
        return g ? err_set(err, -ECONNREFUSED, "cannot resolve %s: %s", host, gai_strerror(g)) : 0;
    }
    lookup *l = xzalloc(sizeof(*l));
    l->hints = hints;
    l->name = xstrdup(host);
    memcpy(l->service, service, sizeof(service));
    l->cb.ar_name = l->name;
    l->cb.ar_service = l->service;
    l->cb.ar_request = &l->hints;
    struct gaicb *list[1] = {&l->cb};
    int g = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
    if (g) {
        lookup_free(l);
        return err_set(err, -ECONNREFUSED, "cannot resolve %s: %s", host, gai_strerror(g));
    }
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        struct timespec ts = {.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
        const struct gaicb *const wait[1] = {&l->cb};
        int s = gai_suspend(wait, 1, &ts);
        if (s != EAI_AGAIN && s != EAI_INTR)
            break; /* done (0, EAI_ALLDONE) or failed: gai_error() says which */
    }
    g = gai_error(&l->cb);
    if (g == EAI_INPROGRESS) {
        if (gai_cancel(&l->cb) == EAI_CANCELED)
            lookup_free(l);
        return err_set(err, -ETIMEDOUT, "resolving %s did not finish within the request's deadline",
                       host);
    }
    if (g) {
        lookup_free(l);
        return err_set(err, -ECONNREFUSED, "cannot resolve %s: %s", host, gai_strerror(g));
    }
    *out = l->cb.ar_result;
    lookup_free(l);
    return 0;
}

static int tcp_connect(httpc *c, const httpc_url *to, int64_t deadline, cista_error **err)
{
    struct addrinfo *res = NULL;
    int g = resolve(&res, to->host, to->port, to->host_is_ip, deadline, err);
    if (g < 0)
        return g;
    int code = -ECONNREFUSED;
    _cleanup_free_ char *why = NULL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        /* each address gets its own connect timeout, within the request's deadline: an
         * unreachable first address (IPv6 dropped on the way) leaves time for the others */
        int64_t now = now_ms();
        if (now >= deadline)
            break;
        int64_t cdl = now + HTTPC_CONNECT_TIMEOUT * 1000;
        if (cdl > deadline)
            cdl = deadline;
        char addr[INET6_ADDRSTRLEN] = "?";
        getnameinfo(ai->ai_addr, ai->ai_addrlen, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST);
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            free(why);
            why = xasprintf("socket: %s", strerror(errno));
            continue;
        }
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc < 0 && (errno == EINPROGRESS || errno == EINTR)) {
            int w = wait_fd(fd, POLLOUT, cdl);
            if (w == -ETIMEDOUT) {
                close(fd);
                free(why);
                why = xasprintf("connect to %s port %u: no answer within %ld s", addr, to->port,
                                (long)(cdl == deadline ? c->timeout : HTTPC_CONNECT_TIMEOUT));
                code = -ETIMEDOUT;
                continue;
            }
            int soerr = w < 0 ? -w : 0;
            socklen_t sl = sizeof(soerr);
            if (!soerr && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                soerr = errno;
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
        if (rc == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            freeaddrinfo(res);
            c->fd = fd;
            return 0;
        }
        free(why);
        why = xasprintf("connect to %s port %u: %s", addr, to->port, strerror(errno));
        close(fd);
    }
    freeaddrinfo(res);
    return err_set(err, code, "%s", why ? why : "no address");
}

static int read_response(httpc *c, httpc_parser *p, bool *out_extra, int64_t deadline,
                         cista_error **err);

/* Through an http:// proxy to an https:// origin: CONNECT, then TLS inside the tunnel. */
static int proxy_tunnel(httpc *c, int64_t deadline, cista_error **err)
{
    cbuf q;
    buf_init(&q, 0, false);
    buf_printf(&q,
               "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cista/" CISTA_VERSION
               "\r\nProxy-Connection: Keep-Alive\r\n\r\n",
               c->url.authority, c->url.authority);
    int r = conn_write(c, q.data, q.size, deadline, err);
    buf_free(&q);
    if (r < 0)
        return err_wrap(err, "proxy %s", c->proxy.authority);
    httpc_parser p;
    httpc_parser_init(&p, true, 0);
    bool extra = false;
    r = read_response(c, &p, &extra, deadline, err);
    int st = p.status;
    httpc_parser_clear(&p);
    if (r < 0)
        return err_wrap(err, "proxy %s: CONNECT %s", c->proxy.authority, c->url.authority);
    if (st < 200 || st > 299)
        return err_set(err, -ECONNREFUSED, "proxy %s refused the tunnel to %s: HTTP %d",
                       c->proxy.authority, c->url.authority, st);
    if (extra)
        return err_set(err, -EPROTO, "proxy %s: data after its CONNECT response",
                       c->proxy.authority);
    return 0;
}

static int tls_connect(httpc *c, int64_t deadline, cista_error **err)
{
    c->ssl = SSL_new(c->ctx);
    BIO *b = c->ssl ? httpc_socket_bio(c->fd) : NULL;
    if (!b)
        return err_set_ssl(err, -ENOMEM, "SSL_new");
    SSL_set_bio(c->ssl, b, b);
    SSL_set_app_data(c->ssl, c);
    SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = c->url.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->url.host)
                               : SSL_set_tlsext_host_name(c->ssl, c->url.host) &&
                                     SSL_set1_host(c->ssl, c->url.host);
    if (!ok)
        return err_set_ssl(err, -ECONNREFUSED, "TLS: cannot set the name %s to verify",
                           c->url.host);
    if (c->resume && c->session && SSL_set_session(c->ssl, c->session) != 1)
        ERR_clear_error(); /* a full handshake then */
    for (;;) {
        ERR_clear_error();
        int ret = SSL_connect(c->ssl);
        if (ret == 1)
            break;
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK) {
            ERR_clear_error();
            return err_set(err, -EKEYREJECTED,
                           "TLS handshake with %s: the server's certificate does not verify: %s "
                           "(is the CA file the one that issued it, and does it name %s?)",
                           c->url.authority, X509_verify_cert_error_string(v), c->url.host);
        }
        int r = tls_wait(c, ret, deadline, "TLS handshake", err);
        if (r < 0)
            return err_wrap(err, "%s", c->url.authority);
    }
    c->tls_ok = true;
    log_debug("%s: TLS %s, %s%s", c->url.authority, SSL_get_version(c->ssl),
              SSL_get_cipher_name(c->ssl), SSL_session_reused(c->ssl) ? ", resumed" : "");
    return 0;
}

static int conn_open(httpc *c, int64_t deadline, cista_error **err)
{
    bool via = c->proxy.port != 0;
    int r = tcp_connect(c, via ? &c->proxy : &c->url, deadline, err);
    if (r < 0 && via)
        r = err_wrap(err, "proxy %s", c->proxy.authority);
    if (r >= 0 && via && c->url.https)
        r = proxy_tunnel(c, deadline, err);
    if (r >= 0 && c->url.https)
        r = tls_connect(c, deadline, err);
    if (r < 0)
        conn_close(c);
    return r;
}

/* ---- requests ---- */

static int read_response(httpc *c, httpc_parser *p, bool *out_extra, int64_t deadline,
                         cista_error **err)
{
    uint8_t buf[16384];
    int r;
    *out_extra = false;
    for (;;) {
        ssize_t n = conn_read(c, buf, sizeof(buf), deadline, err);
        if (n < 0) {
            r = (int)n;
            break;
        }
        if (n == 0) {
            if (c->unclean_eof && httpc_parser_close_delimited(p)) {
                r = err_set(err, -EPROTO,
                            "the connection closed without a TLS close_notify "
                            "during a body delimited by the close (truncated?)");
                break;
            }
            r = httpc_parser_eof(p, err);
            break;
        }
        size_t used = 0;
        r = httpc_parser_feed(p, &used, buf, (size_t)n, err);
        if (r != 0) {
            *out_extra = r == 1 && used < (size_t)n;
            break;
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return r < 0 ? r : 0;
}

static bool needs_length(const char *method)
{
    return !strcmp(method, "POST") || !strcmp(method, "PUT") || !strcmp(method, "PATCH");
}

static int check_req(const httpc_req *q, cista_error **err)
{
    if (!q->method || !is_token(q->method, strlen(q->method)))
        return err_set(err, -EINVAL, "HTTP method \"%s\" is not a token",
                       q->method ? q->method : "(null)");
    if (!q->path || (q->path[0] && q->path[0] != '/'))
        return err_set(err, -EINVAL, "request path \"%s\" does not start with '/'",
                       q->path ? q->path : "(null)");
    for (const char *s = q->path; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || *s == '#')
            return err_set(err, -EINVAL,
                           "request path \"%s\": spaces, '#', control or non-ASCII characters",
                           q->path);
    if (q->bearer && (!*q->bearer || !is_field_value(q->bearer)))
        return err_set(err, -EINVAL, "bearer token is empty or has control characters");
    if (q->content_type && !is_field_value(q->content_type))
        return err_set(err, -EINVAL, "Content-Type has control characters");
    return 0;
}

static void build_request(httpc *c, cbuf *b, const httpc_req *q)
{
    const char *path = *c->url.base || *q->path ? q->path : "/";
    buf_printf(b, "%s ", q->method);
    if (c->proxy.port && !c->url.https)
        buf_printf(b, "http://%s", c->url.host_hdr); /* absolute form, to an http proxy */
    buf_printf(
        b, "%s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cista/" CISTA_VERSION "\r\nAccept: */*\r\n",
        c->url.base, path, c->url.host_hdr);
    if (q->bearer)
        buf_printf(b, "Authorization: Bearer %s\r\n", q->bearer);
    char *cookies = httpc_jar_header(&c->jar, time(NULL));
    if (cookies)
        buf_printf(b, "Cookie: %s\r\n", cookies);
    free_secret_str(cookies);
    if (q->body)
        buf_printf(b, "Content-Type: %s\r\n",
                   q->content_type ? q->content_type : "application/json");
    if (q->body || needs_length(q->method))
        buf_printf(b, "Content-Length: %zu\r\n", q->body ? q->body_size : 0);
    buf_puts(b, "\r\n");
    if (q->body && q->body_size)
        buf_put(b, q->body, q->body_size);
}

/*
 * One exchange on the current connection. *out_retry: it failed in a way that a closed idle
 * connection explains (reused, no byte of the response).
 */
/*
 * Whether a request may be sent again when the first attempt may have reached the server
 * (RFC 9110 9.2.2): not a POST, which could be applied twice (a counter compare-and-set would
 * then report a conflict for its own update).
 */
static bool idempotent(const char *method)
{
    static const char *const m[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < ARRAY_LEN(m); i++)
        if (!strcmp(method, m[i]))
            return true;
    return false;
}

/* A kept-alive connection the server has closed (FIN or reset seen): not worth a request. */
static bool conn_stale(const httpc *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLRDHUP};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static int exchange(httpc *c, httpc_parser *p, const cbuf *req, bool no_body, bool may_resend,
                    int64_t deadline, bool *out_retry, cista_error **err)
{
    bool reused = c->served > 0;
    *out_retry = false;
    httpc_parser_init(p, no_body, c->body_max);
    int r = conn_write(c, req->data, req->size, deadline, err);
    bool extra = false;
    if (r >= 0)
        r = read_response(c, p, &extra, deadline, err);
    if (r < 0) {
        *out_retry = reused && may_resend && r != -ETIMEDOUT && p->received == 0;
        conn_close(c);
        return r;
    }
    time_t now = time(NULL);
    for (size_t i = 0; i < p->set_cookie_count; i++) {
        cista_error *e = NULL;
        if (httpc_jar_set(&c->jar, p->set_cookie[i], now, &e) < 0)
            log_debug("%s: cookie ignored: %s", c->url.authority, e->msg);
        err_free(e);
    }
    if (extra)
        log_debug("%s: data after the response; not reusing the connection", c->url.authority);
    if (!p->keep_alive || extra)
        conn_close(c);
    else
        c->served++;
    return 0;
}

int httpc_request(httpc *c, httpc_resp *out, const httpc_req *q, cista_error **err)
{
    memset(out, 0, sizeof(*out));
    int r = check_req(q, err);
    if (r < 0)
        return r;
    cbuf req;
    buf_init(&req, 0, true); /* the token and the body may be secrets */
    build_request(c, &req, q);
    int64_t deadline = now_ms() + (int64_t)c->timeout * 1000;
    bool no_body = !strcmp(q->method, "HEAD");
    httpc_parser p;
    bool have_p = false;
    cista_error *e = NULL;
    for (int attempt = 0;; attempt++) {
        bool retry = false;
        if (c->fd >= 0 && c->served > 0 && conn_stale(c)) {
            log_debug("%s: the kept-alive connection was closed by the server; a new one",
                      c->url.authority);
            conn_close(c);
        }
        r = c->fd >= 0 ? 0 : conn_open(c, deadline, &e);
        if (r >= 0) {
            r = exchange(c, &p, &req, no_body, idempotent(q->method), deadline, &retry, &e);
            have_p = true;
        }
        if (r >= 0 || !retry || attempt)
            break;
        log_debug("%s %s: the kept-alive connection was closed (%s); again on a new one", q->method,
                  c->url.authority, e->msg);
        err_clear(&e);
        httpc_parser_clear(&p);
        have_p = false;
    }
    buf_free(&req);
    if (r < 0) {
        if (have_p)
            httpc_parser_clear(&p);
        if (err && !*err)
            *err = steal_ptr(&e);
        err_free(e);
        err_wrap(err, "%s %s://%s%s%s", q->method, c->url.https ? "https" : "http", c->url.host_hdr,
                 c->url.base, q->path);
        return r;
    }
    out->status = p.status;
    out->body = buf_steal(&p.body, &out->body_size);
    httpc_parser_clear(&p);
    return 0;
}
