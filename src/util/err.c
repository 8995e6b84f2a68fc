/* err.c - structured errors with a context chain (see err.h). */
#include "util/err.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

__attribute__((format(printf, 1, 0))) static char *vfmt(const char *fmt, va_list ap)
{
    char *p = NULL;
    if (vasprintf(&p, fmt, ap) < 0)
        abort();
    return p;
}

static int set_msg(cista_error **err, int code, char *msg)
{
    if (code >= 0)
        code = -EIO;
    if (!err || *err) {
        /* The first cause wins; later ones are usually consequences. */
        free(msg);
        return code;
    }
    cista_error *e = xzalloc(sizeof(*e));
    e->code = code;
    e->msg = msg;
    *err = e;
    return code;
}

int err_set(cista_error **err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *m = vfmt(fmt, ap);
    va_end(ap);
    return set_msg(err, code, m);
}

int err_set_sys(cista_error **err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *m = vfmt(fmt, ap);
    va_end(ap);
    return set_msg(err, code, xasprintf("%s: %s", m, strerror(code < 0 ? -code : EIO)));
}

int err_set_ssl(cista_error **err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    _cleanup_free_ char *m = vfmt(fmt, ap);
    va_end(ap);
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return set_msg(err, code, *buf ? xasprintf("%s (openssl: %s)", m, buf) : steal_ptr(&m));
}

int err_wrap(cista_error **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *m = vfmt(fmt, ap);
    va_end(ap);
    if (!err) {
        free(m);
        return -EIO;
    }
    if (!*err)
        return set_msg(err, -EIO, m);
    cista_error *e = *err;
    e->context = xrealloc(e->context, (e->context_len + 1) * sizeof(char *));
    e->context[e->context_len++] = m;
    return e->code;
}

char *err_str(const cista_error *e)
{
    if (!e)
        return xstrdup("unknown error");
    size_t size = strlen(e->msg) + 1;
    for (size_t i = 0; i < e->context_len; i++)
        size += strlen(e->context[i]) + 2;
    char *s = xmalloc(size);
    char *p = s;
    for (size_t i = e->context_len; i-- > 0;) {
        size_t n = strlen(e->context[i]);
        memcpy(p, e->context[i], n);
        p += n;
        *p++ = ':';
        *p++ = ' ';
    }
    strcpy(p, e->msg);
    return s;
}

void err_free(cista_error *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->context_len; i++)
        free(e->context[i]);
    free(e->context);
    free(e->msg);
    free(e);
}

void err_clear(cista_error **err)
{
    if (err) {
        err_free(*err);
        *err = NULL;
    }
}

void err__freep(cista_error **e)
{
    err_clear(e);
}
