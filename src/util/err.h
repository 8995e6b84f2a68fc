/*
 * err.h - structured errors in the style of crun's libcrun_error.
 *
 * A fallible function returns 0 or a negative errno-style code and fills a
 * cista_error: the code, the root-cause message, and a chain of context
 * strings added by callers on the way up ("unpack layer 2: entry etc/x:
 * ..."). The first error set wins; later err_set() calls on a filled error
 * only free their arguments, so cleanup paths cannot mask the cause.
 *
 * Not shared between threads: each call chain owns its error object.
 */
#ifndef CISTA_ERR_H
#define CISTA_ERR_H

#include <stddef.h>

typedef struct cista_error cista_error;

struct cista_error {
    int code;       /* negative errno-style code */
    char *msg;      /* root cause, what was wrong and what to do */
    char **context; /* outermost last */
    size_t context_len;
};

/* Fill *err (when err is not NULL and *err is NULL). Returns @code (< 0). */
int err_set(cista_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As err_set, with strerror(-code) appended. */
int err_set_sys(cista_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Add context to an error already set and return its code, so the call site
 * reads `return err_wrap(err, "layer %s", d);`. With no error set (a callee
 * that forgot) it creates one with -EIO.
 */
int err_wrap(cista_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Attach the OpenSSL error queue to a message (and clear the queue). */
int err_set_ssl(cista_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "ctx-outer: ctx-inner: message". Caller frees. */
char *err_str(const cista_error *e);
void err_free(cista_error *e);
/* Free *err and set it to NULL; safe on NULL. */
void err_clear(cista_error **err);

void err__freep(cista_error **e);
#define _cleanup_err_ __attribute__((cleanup(err__freep)))

#endif
