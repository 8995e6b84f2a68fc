/* codec.c - strict base64, base64url and hex (see codec.h). */
#include "util/codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t encoded_len(size_t size, bool pad)
{
    return pad ? (size + 2) / 3 * 4 : size / 3 * 4 + (size % 3 ? size % 3 + 1 : 0);
}

static size_t encode_to(char *out, const uint8_t *in, size_t size, const char *alpha, bool pad)
{
    char *p = out;
    size_t i = 0;
    for (; i + 3 <= size; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *p++ = alpha[v >> 18];
        *p++ = alpha[(v >> 12) & 63];
        *p++ = alpha[(v >> 6) & 63];
        *p++ = alpha[v & 63];
    }
    if (size - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *p++ = alpha[v >> 18];
        *p++ = alpha[(v >> 12) & 63];
        if (pad) {
            *p++ = '=';
            *p++ = '=';
        }
    } else if (size - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *p++ = alpha[v >> 18];
        *p++ = alpha[(v >> 12) & 63];
        *p++ = alpha[(v >> 6) & 63];
        if (pad)
            *p++ = '=';
    }
    *p = '\0';
    return (size_t)(p - out);
}

static char *encode(const uint8_t *in, size_t size, const char *alpha, bool pad)
{
    char *out = xmalloc(encoded_len(size, pad) + 1);
    encode_to(out, in, size, alpha, pad);
    return out;
}

size_t b64url_encoded_len(size_t size)
{
    return encoded_len(size, false);
}

size_t b64url_encode_to(char *dst, const void *data, size_t size)
{
    return encode_to(dst, data, size, b64_url, false);
}

char *b64_encode(const void *data, size_t size)
{
    return encode(data, size, b64_std, true);
}

char *b64url_encode(const void *data, size_t size)
{
    return encode(data, size, b64_url, false);
}

/*
 * The sextet of each byte value in the standard (@url false) or URL alphabet, -1 for bytes outside
 * it: one table lookup per character instead of a chain of range tests.
 */
#define B64_VAL(c, url)                                                                            \
    ((int8_t)((c) >= 'A' && (c) <= 'Z'     ? (c) - 'A'                                             \
              : (c) >= 'a' && (c) <= 'z'   ? (c) - 'a' + 26                                        \
              : (c) >= '0' && (c) <= '9'   ? (c) - '0' + 52                                        \
              : (c) == ((url) ? '-' : '+') ? 62                                                    \
              : (c) == ((url) ? '_' : '/') ? 63                                                    \
                                           : -1))
#define B64_VAL4(c, url)                                                                           \
    B64_VAL(c, url), B64_VAL((c) + 1, url), B64_VAL((c) + 2, url), B64_VAL((c) + 3, url)
#define B64_VAL16(c, url)                                                                          \
    B64_VAL4(c, url), B64_VAL4((c) + 4, url), B64_VAL4((c) + 8, url), B64_VAL4((c) + 12, url)
#define B64_VAL64(c, url)                                                                          \
    B64_VAL16(c, url), B64_VAL16((c) + 16, url), B64_VAL16((c) + 32, url), B64_VAL16((c) + 48, url)
#define B64_VAL256(url)                                                                            \
    B64_VAL64(0, url), B64_VAL64(64, url), B64_VAL64(128, url), B64_VAL64(192, url)

static const int8_t g_b64_val[2][256] = {{B64_VAL256(false)}, {B64_VAL256(true)}};

static int decode(uint8_t **out, size_t *out_size, const char *s, size_t len, bool url,
                  cista_error **err)
{
    const char *what = url ? "base64url" : "base64";
    size_t pad = 0;
    while (pad < 2 && len > pad && s[len - 1 - pad] == '=')
        pad++;
    size_t n = len - pad;
    /* Standard base64 must be padded to a multiple of 4; base64url may omit it. */
    if ((!url || pad) && len % 4 != 0)
        return err_set(err, -EINVAL, "%s: length %zu is not a multiple of 4", what, len);
    if (n % 4 == 1)
        return err_set(err, -EINVAL, "%s: impossible length %zu", what, len);
    const int8_t *val = g_b64_val[url];
    const unsigned char *u = (const unsigned char *)s;
    uint8_t *o = xmalloc(n / 4 * 3 + 3);
    size_t k = 0, i = 0;
    /* Whole groups of four; a group with a bad character is left to the loop below, which names
     * its offset. */
    for (; i + 4 <= n; i += 4) {
        int a = val[u[i]], b = val[u[i + 1]], c = val[u[i + 2]], d = val[u[i + 3]];
        if ((a | b | c | d) < 0)
            break;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        o[k++] = (uint8_t)(v >> 16);
        o[k++] = (uint8_t)(v >> 8);
        o[k++] = (uint8_t)v;
    }
    uint32_t acc = 0;
    for (; i < n; i++) {
        int v = val[u[i]];
        if (v < 0) {
            free(o);
            return err_set(err, -EINVAL, "%s: invalid character at offset %zu", what, i);
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            o[k++] = (uint8_t)(acc >> 16);
            o[k++] = (uint8_t)(acc >> 8);
            o[k++] = (uint8_t)acc;
            acc = 0;
        }
    }
    size_t rem = n % 4;
    /* Leftover bits must be zero, so each byte string has one encoding. */
    if ((rem == 2 && (acc & 0xf)) || (rem == 3 && (acc & 0x3))) {
        free(o);
        return err_set(err, -EINVAL, "%s: non-canonical trailing bits", what);
    }
    if (rem == 2) {
        o[k++] = (uint8_t)(acc >> 4);
    } else if (rem == 3) {
        o[k++] = (uint8_t)(acc >> 10);
        o[k++] = (uint8_t)(acc >> 2);
    }
    o[k] = 0;
    *out = o;
    *out_size = k;
    return 0;
}

int b64_decode(uint8_t **out, size_t *out_size, const char *s, size_t len, cista_error **err)
{
    return decode(out, out_size, s, len, false, err);
}

int b64url_decode(uint8_t **out, size_t *out_size, const char *s, size_t len, cista_error **err)
{
    return decode(out, out_size, s, len, true, err);
}

char *hex_encode(const void *data, size_t size)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *in = data;
    char *out = xmalloc(size * 2 + 1);
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[size * 2] = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex_into(uint8_t *out, const char *s, size_t len, cista_error **err)
{
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return err_set(err, -EINVAL, "hex: invalid character at offset %zu",
                           hi < 0 ? i : i + 1);
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int hex_decode(uint8_t **out, size_t *out_size, const char *s, size_t len, cista_error **err)
{
    if (len % 2)
        return err_set(err, -EINVAL, "hex: odd length %zu", len);
    uint8_t *o = xmalloc(len / 2 + 1);
    int r = hex_into(o, s, len, err);
    if (r < 0) {
        free(o);
        return r;
    }
    o[len / 2] = 0;
    *out = o;
    *out_size = len / 2;
    return 0;
}

int hex_decode_to(uint8_t *out, size_t size, const char *s, cista_error **err)
{
    size_t len = strlen(s);
    if (len != size * 2)
        return err_set(err, -EINVAL, "hex: expected %zu digits, got %zu", size * 2, len);
    return hex_into(out, s, len, err);
}
