/* buf.c - bounded growable byte buffers (see buf.h). */
#include "util/buf.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

void buf_init(cbuf *b, size_t max, bool secret)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
    b->secret = secret;
}

static void grow(cbuf *b, size_t need)
{
    if (need + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need + 1)
        cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
    if (b->secret) {
        /* realloc could leave a copy of the secret behind in freed memory. */
        uint8_t *n = xmalloc(cap);
        if (b->data) {
            memcpy(n, b->data, b->size);
            OPENSSL_cleanse(b->data, b->cap);
            free(b->data);
        }
        b->data = n;
    } else {
        b->data = xrealloc(b->data, cap);
    }
    b->cap = cap;
}

uint8_t *buf_reserve(cbuf *b, size_t size)
{
    if (size > SIZE_MAX - b->size - 1)
        abort();
    grow(b, b->size + size);
    return b->data + b->size;
}

void buf_put(cbuf *b, const void *p, size_t size)
{
    uint8_t *dst = buf_reserve(b, size);
    if (size)
        memcpy(dst, p, size);
    b->size += size;
    b->data[b->size] = 0;
}

void buf_puts(cbuf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

int buf_append(cbuf *b, const void *p, size_t size, cista_error **err)
{
    size_t max = b->max ? b->max : SIZE_MAX - 1;
    if (size > max || b->size > max - size)
        return err_set(err, -EMSGSIZE, "input exceeds the limit of %zu bytes", max);
    buf_put(b, p, size);
    return 0;
}

int buf_append_str(cbuf *b, const char *s, cista_error **err)
{
    return buf_append(b, s, strlen(s), err);
}

void buf_printf(cbuf *b, const char *fmt, ...)
{
    /* gcc with UBSan otherwise warns that fmt might be NULL below. */
    if (!fmt)
        abort();
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    uint8_t *dst = buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf((char *)dst, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->size += (size_t)n;
}

void buf_reset(cbuf *b)
{
    if (b->secret && b->data)
        OPENSSL_cleanse(b->data, b->cap);
    b->size = 0;
    if (b->data)
        b->data[0] = 0;
}

uint8_t *buf_steal(cbuf *b, size_t *out_size)
{
    if (!b->data)
        buf_reserve(b, 0);
    b->data[b->size] = 0;
    uint8_t *p = b->data;
    if (out_size)
        *out_size = b->size;
    b->data = NULL;
    b->size = b->cap = 0;
    return p;
}

void buf_free(cbuf *b)
{
    if (b->data) {
        if (b->secret)
            OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->size = b->cap = 0;
}
