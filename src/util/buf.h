/*
 * buf.h - a growable byte buffer with a hard size limit (Redis sds-like,
 * but binary and bounded).
 *
 * Used to collect untrusted input: every append checks against @max so a
 * hostile peer cannot make us allocate without bound. A buffer marked
 * secret is cleansed (OPENSSL_cleanse) whenever its memory is released or
 * moved. Not thread-safe; one owner at a time.
 */
#ifndef CISTA_BUF_H
#define CISTA_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct {
    uint8_t *data; /* always NUL-terminated past size, for text use */
    size_t size;
    size_t cap;
    size_t max; /* 0 means SIZE_MAX */
    bool secret;
} cbuf;

#define CBUF_INIT                                                                                  \
    {                                                                                              \
        NULL, 0, 0, 0, false                                                                       \
    }

void buf_init(cbuf *b, size_t max, bool secret);
/* Appends; -EMSGSIZE when the result would exceed max. */
int buf_append(cbuf *b, const void *p, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
int buf_append_str(cbuf *b, const char *s, cista_error **err) __attribute__((warn_unused_result));
/* Unbounded appenders for data we generate ourselves (abort on OOM). */
void buf_put(cbuf *b, const void *p, size_t size);
void buf_puts(cbuf *b, const char *s);
void buf_printf(cbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Make room for @size more bytes and return a pointer to the free space. */
uint8_t *buf_reserve(cbuf *b, size_t size);
void buf_reset(cbuf *b);
/* Hand the memory to the caller (NUL-terminated); the buffer becomes empty. */
uint8_t *buf_steal(cbuf *b, size_t *out_size);
void buf_free(cbuf *b);

#define _cleanup_buf_ __attribute__((cleanup(buf_free)))

#endif
