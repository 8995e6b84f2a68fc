/*
 * fuzz_http_response.c - util/httpc.h's parsers of bytes from the server (or the user's
 * environment). The first input byte picks one:
 *   0-3, 7: a response (bit 0: to a HEAD or CONNECT, so no body; bit 1: a 64-byte body limit),
 *           fed whole and then again in pieces of 1-8 bytes (from the second byte), then the
 *           end of the connection; both feeds must agree on the outcome, the status, the body,
 *           keep-alive and the bytes taken, or the target aborts;
 *   4: Set-Cookie values, one per line, into a jar, then the Cookie header;
 *   5: a URL, parsed as a server URL and as a proxy URL;
 *   6: a no_proxy list, a newline, then a host.
 * Must never crash, hang or leak.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/httpc.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    int r;
    size_t used;
} outcome;

static outcome feed(httpc_parser *p, const uint8_t *data, size_t size, size_t step, bool no_body,
                    size_t max)
{
    outcome o = {0, 0};
    cista_error *err = NULL;
    httpc_parser_init(p, no_body, max);
    size_t off = 0;
    while (off < size) {
        size_t k = step && size - off > step ? step : size - off, used = 0;
        o.r = httpc_parser_feed(p, &used, data + off, k, &err);
        if (o.r < 0)
            break;
        if (o.r == 1) {
            off += used;
            break;
        }
        off += k;
    }
    o.used = off;
    if (o.r == 0)
        o.r = httpc_parser_eof(p, &err);
    err_free(err);
    return o;
}

static void response(const uint8_t *data, size_t size, uint8_t sel)
{
    bool no_body = sel & 1;
    size_t max = sel & 2 ? 64 : 0;
    size_t step = size ? 1 + data[0] % 8 : 1;
    httpc_parser a, b;
    outcome oa = feed(&a, data, size, 0, no_body, max);
    outcome ob = feed(&b, data, size, step, no_body, max);
    if (oa.r != ob.r)
        abort();
    if (oa.r == 1 && (oa.used != ob.used || a.status != b.status || a.keep_alive != b.keep_alive ||
                      a.body.size != b.body.size ||
                      (a.body.size && memcmp(a.body.data, b.body.data, a.body.size)) ||
                      a.set_cookie_count != b.set_cookie_count))
        abort();
    if (oa.r == 1 && a.body.size > (max ? max : HTTPC_BODY_MAX_DEFAULT))
        abort();
    httpc_parser_clear(&a);
    httpc_parser_clear(&b);
}

static void cookies(const uint8_t *data, size_t size)
{
    httpc_jar j = {0};
    char *text = xstrndup((const char *)data, size);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cista_error *err = NULL;
        if (httpc_jar_set(&j, line, 1700000000, &err) < 0)
            err_clear(&err);
    }
    if (j.count > HTTPC_COOKIES_MAX)
        abort();
    free(httpc_jar_header(&j, 1700000000));
    httpc_jar_clear(&j);
    free(text);
}

static void urls(const uint8_t *data, size_t size)
{
    char *text = xstrndup((const char *)data, size);
    httpc_url u;
    cista_error *err = NULL;
    if (httpc_url_parse(&u, text, &err) == 0)
        httpc_url_clear(&u);
    err_clear(&err);
    if (httpc_proxy_url_parse(&u, text, &err) == 0)
        httpc_url_clear(&u);
    err_clear(&err);
    free(text);
}

static void no_proxy(const uint8_t *data, size_t size)
{
    char *text = xstrndup((const char *)data, size);
    char *nl = strchr(text, '\n');
    if (nl) {
        *nl = 0;
        (void)httpc_no_proxy_match(text, nl + 1);
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0] % 8;
    data++;
    size--;
    switch (sel) {
    case 4:
        cookies(data, size);
        break;
    case 5:
        urls(data, size);
        break;
    case 6:
        no_proxy(data, size);
        break;
    default:
        response(data, size, sel == 7 ? 0 : sel);
        break;
    }
    return 0;
}
