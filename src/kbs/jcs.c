/*
 * jcs.c - RFC 8785 JSON Canonicalization Scheme and the RCAR runtime-data
 * binding (see kbs.h).
 *
 * Object members are sorted by their names as arrays of UTF-16 code units;
 * strings are escaped minimally (only '"', '\\' and control characters,
 * the latter as \b \t \n \f \r or lowercase \u00xx); numbers are written
 * as ECMAScript's Number.prototype.toString writes an IEEE double: the
 * shortest digit string that round-trips, in plain notation for decimal
 * exponents -7 < e < 21, else as d.ddde±x.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kbs/kbs.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/util.h"

/* Next UTF-16 code unit of a UTF-8 string (jansson guarantees valid UTF-8). */
typedef struct {
    const unsigned char *p, *end;
    unsigned pending; /* low surrogate still to return, or 0 */
} u16_iter;

static int u16_next(u16_iter *it)
{
    if (it->pending) {
        int u = (int)it->pending;
        it->pending = 0;
        return u;
    }
    if (it->p >= it->end)
        return -1;
    unsigned c = *it->p++;
    unsigned cp;
    int extra;
    if (c < 0x80) {
        cp = c;
        extra = 0;
    } else if ((c & 0xe0) == 0xc0) {
        cp = c & 0x1f;
        extra = 1;
    } else if ((c & 0xf0) == 0xe0) {
        cp = c & 0x0f;
        extra = 2;
    } else {
        cp = c & 0x07;
        extra = 3;
    }
    for (int i = 0; i < extra && it->p < it->end; i++)
        cp = (cp << 6) | (*it->p++ & 0x3f);
    if (cp >= 0x10000) {
        cp -= 0x10000;
        it->pending = 0xdc00 | (cp & 0x3ff);
        return (int)(0xd800 | (cp >> 10));
    }
    return (int)cp;
}

static int cmp_utf16(const char *a, size_t an, const char *b, size_t bn)
{
    u16_iter x = {(const unsigned char *)a, (const unsigned char *)a + an, 0};
    u16_iter y = {(const unsigned char *)b, (const unsigned char *)b + bn, 0};
    for (;;) {
        int ca = u16_next(&x), cb = u16_next(&y);
        if (ca != cb)
            return ca < cb ? -1 : 1;
        if (ca < 0)
            return 0;
    }
}

typedef struct {
    const char *key;
    size_t len;
    json_t *v;
} member;

static int member_cmp(const void *pa, const void *pb)
{
    const member *a = pa, *b = pb;
    return cmp_utf16(a->key, a->len, b->key, b->len);
}

static void put_string(cbuf *b, const char *s, size_t n)
{
    js_buf_put_string(b, s, n, true);
}

/* ECMAScript Number::toString for a finite double. */
static void put_double(cbuf *b, double d)
{
    if (d == 0) {
        buf_puts(b, "0");
        return;
    }
    if (d < 0) {
        buf_puts(b, "-");
        d = -d;
    }
    char tmp[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    /* tmp is "D.DDDDe±XX": collect the digits and the exponent. */
    char digits[24];
    size_t k = 0;
    const char *p = tmp;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && k < sizeof(digits) - 1)
            digits[k++] = *p;
    while (k > 1 && digits[k - 1] == '0')
        k--;
    digits[k] = 0;
    int e = atoi(p + 1);
    int n = e + 1; /* position of the decimal point */
    if ((int)k <= n && n <= 21) {
        buf_put(b, digits, k);
        for (int i = (int)k; i < n; i++)
            buf_put(b, "0", 1);
    } else if (0 < n && n <= 21) {
        buf_put(b, digits, (size_t)n);
        buf_put(b, ".", 1);
        buf_put(b, digits + n, k - (size_t)n);
    } else if (-6 < n && n <= 0) {
        buf_puts(b, "0.");
        for (int i = 0; i < -n; i++)
            buf_put(b, "0", 1);
        buf_put(b, digits, k);
    } else {
        buf_put(b, digits, 1);
        if (k > 1) {
            buf_put(b, ".", 1);
            buf_put(b, digits + 1, k - 1);
        }
        buf_printf(b, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
    }
}

static int put_value(cbuf *b, const json_t *v, unsigned depth, cista_error **err)
{
    if (depth > JS_MAX_DEPTH)
        return err_set(err, -E2BIG, "JCS: nesting deeper than %d", JS_MAX_DEPTH);
    switch (json_typeof(v)) {
    case JSON_NULL:
        buf_puts(b, "null");
        return 0;
    case JSON_TRUE:
        buf_puts(b, "true");
        return 0;
    case JSON_FALSE:
        buf_puts(b, "false");
        return 0;
    case JSON_INTEGER: {
        json_int_t i = json_integer_value(v);
        if (i > -(1LL << 53) && i < (1LL << 53))
            buf_printf(b, "%lld", (long long)i);
        else
            put_double(b, (double)i);
        return 0;
    }
    case JSON_REAL: {
        double d = json_real_value(v);
        if (!isfinite(d))
            return err_set(err, -EINVAL, "JCS: NaN and infinities have no JSON form");
        put_double(b, d);
        return 0;
    }
    case JSON_STRING:
        put_string(b, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_ARRAY: {
        buf_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                buf_put(b, ",", 1);
            int r = put_value(b, json_array_get(v, i), depth + 1, err);
            if (r < 0)
                return r;
        }
        buf_put(b, "]", 1);
        return 0;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        _cleanup_free_ member *m = xmalloc((n ? n : 1) * sizeof(*m));
        size_t i = 0;
        const char *k;
        size_t klen;
        json_t *x;
        json_object_keylen_foreach((json_t *)v, k, klen, x)
        {
            m[i].key = k;
            m[i].len = klen;
            m[i].v = x;
            i++;
        }
        qsort(m, n, sizeof(*m), member_cmp);
        buf_put(b, "{", 1);
        for (i = 0; i < n; i++) {
            if (i)
                buf_put(b, ",", 1);
            put_string(b, m[i].key, m[i].len);
            buf_put(b, ":", 1);
            int r = put_value(b, m[i].v, depth + 1, err);
            if (r < 0)
                return r;
        }
        buf_put(b, "}", 1);
        return 0;
    }
    }
    return err_set(err, -EINVAL, "JCS: unknown JSON type");
}

int kbs_jcs(char **out, const json_t *v, cista_error **err)
{
    cbuf b = CBUF_INIT;
    int r = put_value(&b, v, 0, err);
    if (r < 0) {
        buf_free(&b);
        return r;
    }
    buf_put(&b, "", 0);
    *out = (char *)buf_steal(&b, NULL);
    if (!*out)
        *out = xstrdup("");
    return 0;
}

int kbs_hash_alg_parse(const char *name)
{
    if (!name)
        return -1;
    if (!strcasecmp(name, "sha256"))
        return CRYPTO_SHA256;
    if (!strcasecmp(name, "sha384"))
        return CRYPTO_SHA384;
    if (!strcasecmp(name, "sha512"))
        return CRYPTO_SHA512;
    return -1;
}

int kbs_binding(uint8_t out[64], crypto_hash_alg alg, const char *nonce, const json_t *jwk,
                const char *additional, cista_error **err)
{
    if (alg != CRYPTO_SHA256 && alg != CRYPTO_SHA384 && alg != CRYPTO_SHA512)
        return err_set(err, -EINVAL, "binding: hash must be sha256, sha384 or sha512");
    _cleanup_json_ json_t *o = json_object();
    if (additional)
        json_object_set_new(o, "additional-evidence", json_string(additional));
    json_object_set_new(o, "nonce", json_string(nonce));
    json_object_set(o, "tee-pubkey", (json_t *)jwk);
    _cleanup_free_ char *text = NULL;
    int r = kbs_jcs(&text, o, err);
    if (r < 0)
        return err_wrap(err, "runtime data");
    memset(out, 0, 64);
    crypto_hash_oneshot(alg, text, strlen(text), out);
    return 0;
}
